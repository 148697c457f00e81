"""Sweeps from the SDK and the `backprop sweep` commands, against a live `backprop serve`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from safetensors.numpy import load_file

from backprop_client import Client, Event
from tests.client.test_cli import backprop
from tests.specs import XOR


def xor_sweep(name: str, **fields: Any) -> dict[str, Any]:
    spec = {**XOR, "training": {**XOR["training"], "epochs": 30}}
    return {
        "name": name,
        "spec": spec,
        "parameters": {"optimizer.learning_rate": {"values": [0.3, 0.03, 0.0003]}},
        "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "max_concurrent": 2,
        **fields,
    }


def test_submit_wait_and_download_the_best_from_python(client: Client, tmp_path: Path) -> None:
    sweep = client.submit_sweep(xor_sweep("xor-sdk"))
    assert sweep.status == "running" and sweep.max_trials == 3
    events: list[Event] = []
    final = client.wait_sweep(sweep, callback=events.append, timeout=240)

    assert final.status == "succeeded" and final.trials["total"] == 3, final.raw
    assert final.trials["succeeded"] + final.trials["pruned"] == 3
    assert events[-1].event == "sweep" and events[-1].data["status"] == "succeeded"
    assert {e.data["number"] for e in events if e.event == "trial"} == {0, 1, 2}

    trials = client.trials(sweep)
    assert sorted(t.params["optimizer.learning_rate"] for t in trials) == [0.0003, 0.03, 0.3]
    values = [t.value for t in trials if t.value is not None]
    assert final.best is not None and final.best["value"] == min(values)
    best = client.best(sweep)
    assert best is not None and best.id == final.best["job_id"]
    assert best.raw["trial"]["number"] == final.best["number"]
    assert [job.id for job in client.jobs(limit=200) if job.raw.get("sweep_id") == sweep.id]

    saved = client.download_best(sweep, tmp_path / "best.safetensors")
    assert load_file(saved)  # the best trial's tensors
    assert client.sweeps(limit=200)[0].id == sweep.id


def test_the_sweep_commands(data_dir: Path, tmp_path: Path, client: Client) -> None:
    body = xor_sweep("xor-cli-sweep")
    del body["spec"]["dataset"]  # given on the command line
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(body))

    watched = backprop(
        data_dir,
        "sweep",
        "submit",
        "sweep.yaml",
        "--dataset",
        "builtin:xor",
        "--watch",
        cwd=tmp_path,
    )
    assert re.search(r"^trial [012] (succeeded|pruned)", watched.stdout, re.MULTILINE)
    match = re.search(
        r"^sweep xor-cli-sweep \(([0-9a-f-]{36})\) succeeded: 3/3 trials, best ",
        watched.stdout,
        re.MULTILINE,
    )
    assert match, watched.stdout
    sweep_id = match.group(1)

    status = backprop(data_dir, "sweep", "status", sweep_id, cwd=tmp_path).stdout
    assert "grid" in status and "loss (minimize)" in status
    trials = backprop(data_dir, "sweep", "trials", sweep_id, cwd=tmp_path).stdout
    assert "optimizer.learning_rate" in trials and trials.count("succeeded") >= 1
    as_json = json.loads(
        backprop(data_dir, "sweep", "trials", sweep_id, "--json", cwd=tmp_path).stdout
    )
    assert [row["number"] for row in as_json] == [0, 1, 2]
    listed = backprop(data_dir, "sweep", "list", "-q", cwd=tmp_path).stdout.split()
    assert sweep_id in listed
    saved = backprop(data_dir, "sweep", "download", sweep_id, "-o", "best/", cwd=tmp_path)
    assert Path(tmp_path, saved.stdout.strip()).is_file()
    ended = backprop(data_dir, "sweep", "cancel", sweep_id, cwd=tmp_path, check=False)
    assert ended.returncode == 1 and "already ended" in ended.stderr
    assert client.sweep(sweep_id).status == "succeeded"
