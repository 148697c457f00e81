"""What the client shows without a server: metric columns, spec files, the terminal chart."""

from __future__ import annotations

from pathlib import Path

import pytest

import backprop_client
from backprop_client import Job, Metrics, SpecFileError, load_spec
from backprop_client.plot import line_chart


def test_metrics_columns_line_series_up_by_step() -> None:
    metrics = Metrics.from_json(
        {
            "job_id": "j",
            "series": [
                {
                    "name": "loss",
                    "step": [5, 10, 15],
                    "epoch": [0, 1, 1],
                    "value": [0.9, 0.5, None],
                    "time": ["t"] * 3,
                },
                {
                    "name": "val_loss",
                    "step": [8, 15],
                    "epoch": [0, 1],
                    "value": [0.7, 0.4],
                    "time": ["t"] * 2,
                },
            ],
        }
    )
    assert metrics.columns() == {
        "step": [5, 8, 10, 15],
        "epoch": [0, 0, 1, 1],
        "loss": [0.9, None, 0.5, None],
        "val_loss": [None, 0.7, None, 0.4],
    }
    assert metrics.columns(["val_loss"]) == {
        "step": [8, 15],
        "epoch": [0, 1],
        "val_loss": [0.7, 0.4],
    }
    assert metrics["val_loss"].last == 0.4 and "loss" in metrics and "mae" not in metrics


def test_specs_load_from_json_and_yaml_with_clear_errors(tmp_path: Path) -> None:
    spec = {"dataset": "builtin:xor", "training": {"epochs": 3}}
    original = {"dataset": "builtin:xor", "training": {"epochs": 3}}
    loaded = load_spec(spec)
    loaded["training"]["epochs"] = 5
    assert spec == original  # a copy: submit(dataset=…) never changes the caller's dict

    (tmp_path / "a.yml").write_text("dataset: builtin:xor\ntraining: {epochs: 3}\n")
    (tmp_path / "a.spec").write_text('{"dataset": "builtin:xor", "training": {"epochs": 3}}')
    assert load_spec(tmp_path / "a.yml") == load_spec(str(tmp_path / "a.spec")) == spec

    (tmp_path / "bad.json").write_text('{"dataset": "builtin:xor",\n "model": }')
    where = r"bad\.json, line 2, column 11: invalid JSON: Expecting value"
    with pytest.raises(SpecFileError, match=where):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecFileError, match="a spec is a JSON/YAML object, not list"):
        load_spec(tmp_path / "list.yaml")
    with pytest.raises(SpecFileError, match="cannot read the spec file"):
        load_spec(tmp_path / "missing.json")


def test_line_chart_draws_each_series_on_shared_axes() -> None:
    chart = line_chart(
        {"loss": ([0, 10, 20], [2.0, 1.0, 0.0]), "val_loss": ([10, 20], [1.5, None])},
        width=21,
        height=5,
    )
    assert chart.splitlines() == [
        "         2 ┤••••                 ",
        "           ┤   •••••• ×          ",  # val_loss: one finite point, at step 10
        "         1 ┤        ••••••       ",
        "           ┤             ••••••  ",
        "         0 ┤                  •••",
        "           └─────────────────────",
        "            0                  20",
        "            • loss   × val_loss   (x: step)",
    ]
    log_chart = line_chart({"loss": ([1, 2, 3], [100.0, 10.0, 1.0])}, height=3, log_y=True)
    assert [line.split("┤")[0].strip() for line in log_chart.splitlines()[:3]] == ["100", "10", "1"]
    assert line_chart({"loss": ([1], [None])}) == "(no points to plot)"


def test_the_package_exports_its_names_lazily() -> None:
    for name in backprop_client.__all__:
        assert getattr(backprop_client, name).__name__ == name
    with pytest.raises(AttributeError):
        backprop_client.NotAName  # noqa: B018


def test_a_job_error_with_a_field_added_later_still_reads() -> None:
    error = {"code": "timeout", "message": "over 60 s", "epoch": 2, "step": None, "hint": "new"}
    job = Job.from_json({"id": "j", "name": "n", "status": "failed", "error": error})
    assert str(job.error) == "timeout: over 60 s (epoch 2)"
