"""Schema and structure validation of the JobSpec (no dataset needed)."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import SpecError
from core.spec import parse_spec
from tests.specs import digits_mlp


def errors_of(data: Any) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return [e.as_dict() for e in caught.value.errors]


def test_api_example_validates_with_defaults_filled_in(cnn_spec: dict[str, Any]) -> None:
    spec = parse_spec(cnn_spec).model_dump(mode="json")
    layers = spec["model"]["layers"]
    assert [layer["name"] for layer in layers] == [
        "conv2d_0",
        "max_pool2d_1",
        "flatten_2",
        "dense_3",
        "dropout_4",
        "dense_5",
    ]
    assert layers[0]["kernel_size"] == [3, 3]
    assert layers[0]["strides"] == [1, 1]
    assert layers[0]["padding"] == "same"
    assert layers[0]["kernel_init"] == {"type": "glorot_uniform"}
    assert layers[1]["strides"] is None  # = pool_size
    assert spec["loss"] == {"type": "cross_entropy", "label_smoothing": 0.0}
    assert spec["metrics"] == [{"type": "accuracy"}]
    assert spec["optimizer"]["learning_rate"] == {"type": "constant", "value": 0.001}
    assert spec["optimizer"]["b1"] == 0.9
    assert spec["training"]["early_stopping"]["mode"] == "min"
    assert spec["training"]["early_stopping"]["restore_best"] is True
    assert spec["training"]["log_every_steps"] == 10
    # The normalised form validates to itself.
    assert parse_spec(spec).model_dump(mode="json") == spec


def test_minimal_spec_gets_every_default() -> None:
    spec = parse_spec(
        {
            "dataset": "builtin:xor",
            "model": {"layers": [{"type": "dense", "units": 1}]},
            "loss": "mse",
        }
    )
    assert spec.optimizer.type == "adam"
    assert spec.training.epochs == 10 and spec.training.batch_size == 32
    assert spec.device == "auto" and spec.metrics == []


def test_unknown_keys_are_errors_at_their_location(cnn_spec: dict[str, Any]) -> None:
    cnn_spec["model"]["layers"][2]["unit"] = 3
    cnn_spec["optimizer"]["learning_rte"] = 0.1
    cnn_spec["trainig"] = {}
    locs = {tuple(e["loc"]) for e in errors_of(cnn_spec)}
    assert locs == {
        ("model", "layers", 2, "unit"),
        ("optimizer", "learning_rte"),
        ("trainig",),
    }


def test_loc_points_into_the_request_not_at_union_tags(cnn_spec: dict[str, Any]) -> None:
    cnn_spec["model"]["layers"][0]["kernel_size"] = 0
    cnn_spec["model"]["layers"][3]["units"] = "many"
    errors = errors_of(cnn_spec)
    assert [e["loc"] for e in errors] == [
        ["model", "layers", 0, "kernel_size"],
        ["model", "layers", 3, "units"],
    ]
    assert "greater than 0" in errors[0]["msg"]


def test_unknown_layer_type_lists_the_known_ones(cnn_spec: dict[str, Any]) -> None:
    cnn_spec["model"]["layers"][1]["type"] = "maxpool"
    (error,) = errors_of(cnn_spec)
    assert error["loc"] == ["model", "layers", 1]
    assert "'maxpool'" in error["msg"] and "max_pool2d" in error["msg"]


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        (("training", "epochs"), -1, ["training", "epochs"]),
        (("training", "batch_size"), "half", ["training", "batch_size"]),
        (("loss",), "hinge", ["loss"]),
        (("optimizer",), {"type": "sgd", "nesterov": True}, ["optimizer"]),
        (
            ("optimizer", "learning_rate"),
            {"type": "cosine"},
            ["optimizer", "learning_rate", "init_value"],
        ),
        (("validation",), {"split": 0.1, "dataset": "abc"}, ["validation"]),
        (("validation", "split"), 1.5, ["validation", "split"]),
        (("device",), "tpu", ["device"]),
        (("metrics",), ["accuracy", "f1"], ["metrics", 1]),
    ],
)
def test_bad_values_are_reported_where_they_are(
    cnn_spec: dict[str, Any], path: tuple[str, ...], value: Any, loc: list[Any]
) -> None:
    target = cnn_spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert loc in [e["loc"] for e in errors_of(cnn_spec)]


def test_epochs_zero_and_full_batch_are_allowed() -> None:
    spec = parse_spec(digits_mlp(epochs=0, batch_size="full"))
    assert spec.training.epochs == 0 and spec.training.batch_size == "full"


def test_chain_rejects_inputs_and_joins() -> None:
    data = digits_mlp()
    data["model"]["layers"][1]["inputs"] = ["input"]
    data["model"]["layers"].insert(2, {"type": "add"})
    errors = errors_of(data)
    assert {tuple(e["loc"]) for e in errors} == {
        ("model", "layers", 1, "inputs"),
        ("model", "layers", 2, "type"),
    }
    assert any("only works in a graph" in e["msg"] for e in errors)


def _graph(nodes: list[dict[str, Any]], output: str) -> dict[str, Any]:
    return {
        "dataset": "builtin:iris",
        "model": {"nodes": nodes, "output": output},
        "loss": "cross_entropy",
    }


def test_graph_cycle_is_named() -> None:
    nodes = [
        {"type": "dense", "units": 4, "name": "a", "inputs": ["c"]},
        {"type": "dense", "units": 4, "name": "b", "inputs": ["a"]},
        {"type": "dense", "units": 4, "name": "c", "inputs": ["b"]},
    ]
    (error,) = errors_of(_graph(nodes, "c"))
    assert error["loc"][:2] == ["model", "nodes"]
    assert "cycle" in error["msg"]
    assert all(name in error["msg"] for name in "abc")


def test_graph_unknown_input_and_output() -> None:
    nodes = [{"type": "dense", "units": 4, "name": "a", "inputs": ["inptu"]}]
    errors = errors_of(_graph(nodes, "z"))
    assert ["model", "nodes", 0, "inputs", 0] in [e["loc"] for e in errors]
    assert ["model", "output"] in [e["loc"] for e in errors]
    assert any("'inptu'" in e["msg"] and "input" in e["msg"] for e in errors)


def test_graph_duplicate_names_and_arity() -> None:
    nodes = [
        {"type": "dense", "units": 4, "name": "a", "inputs": ["input"]},
        {"type": "dense", "units": 4, "name": "a", "inputs": ["input", "input"]},
        {"type": "concat", "name": "j", "inputs": ["a"]},
    ]
    errors = errors_of(_graph(nodes, "j"))
    locs = [e["loc"] for e in errors]
    assert ["model", "nodes", 1, "name"] in locs
    assert ["model", "nodes", 1, "inputs"] in locs
    assert ["model", "nodes", 2, "inputs"] in locs


def test_graph_needs_output_and_not_both_forms() -> None:
    assert errors_of({"dataset": "d", "model": {"nodes": []}, "loss": "mse"})[0]["loc"] == ["model"]
    both = {"dataset": "d", "model": {"layers": [], "nodes": [], "output": "x"}, "loss": "mse"}
    assert "not both" in errors_of(both)[0]["msg"]


def test_early_stopping_monitor_must_be_recorded() -> None:
    data = digits_mlp(early_stopping={"monitor": "val_f1"})
    (error,) = errors_of(data)
    assert error["loc"] == ["training", "early_stopping", "monitor"]
    assert "val_accuracy" in error["msg"]
    data = digits_mlp(stop_when={"metric": "accuracy", "above": 0.9})
    del data["validation"]
    assert parse_spec(data).training.stop_when is not None
    data["training"]["stop_when"]["metric"] = "val_accuracy"
    assert errors_of(data)[0]["loc"] == ["training", "stop_when", "metric"]


def test_early_stopping_mode_follows_the_metric() -> None:
    spec = parse_spec(digits_mlp(early_stopping={"monitor": "val_accuracy"}))
    assert spec.training.early_stopping is not None
    assert spec.training.early_stopping.mode == "max"
