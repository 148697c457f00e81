"""Shape validation against a dataset: errors name the layer, what it expected and found."""

from __future__ import annotations

from typing import Any

import pytest

from core.data import load_builtin
from core.errors import SpecError
from core.model import check_shapes
from core.spec import parse_spec
from tests.specs import digits_mlp


def shape_error(data: dict[str, Any], dataset: str = "digits") -> dict[str, Any]:
    with pytest.raises(SpecError) as caught:
        check_shapes(parse_spec(data), load_builtin(dataset).info)
    (error,) = caught.value.errors
    return error.as_dict()


def test_api_example_cnn_fits_digits(cnn_spec: dict[str, Any]) -> None:
    assert check_shapes(parse_spec(cnn_spec), load_builtin("digits").info).output == (10,)


def test_conv2d_on_flat_features_names_the_layer() -> None:
    data = digits_mlp()
    data["model"]["layers"] = [
        {"type": "flatten"},
        {"type": "conv2d", "filters": 8, "kernel_size": 3},
        {"type": "dense", "units": 10},
    ]
    error = shape_error(data)
    assert error["loc"] == ["model", "layers", 1]
    assert "conv2d_1" in error["msg"]
    assert "rank 3" in error["msg"] and "[64]" in error["msg"]


def test_dense_units_must_match_the_classes() -> None:
    data = digits_mlp()
    data["model"]["layers"][-1]["units"] = 12
    error = shape_error(data)
    assert error["loc"] == ["model", "layers", 2]
    assert "10 classes" in error["msg"] and "[12]" in error["msg"]


def test_regression_output_must_match_targets() -> None:
    data = {
        "dataset": "builtin:sine",
        "model": {"layers": [{"type": "dense", "units": 3}]},
        "loss": "mse",
    }
    error = shape_error(data, "sine")
    assert error["loc"] == ["model", "layers", 0]
    assert "[3]" in error["msg"]


def test_cross_entropy_needs_classes() -> None:
    data = {
        "dataset": "builtin:sine",
        "model": {"layers": [{"type": "dense", "units": 1}]},
        "loss": "cross_entropy",
    }
    assert "classification" in shape_error(data, "sine")["msg"]


def test_pool_window_larger_than_image() -> None:
    data = digits_mlp()
    data["model"]["layers"] = [
        {"type": "max_pool2d", "pool_size": 9},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
    ]
    error = shape_error(data)
    assert error["loc"] == ["model", "layers", 0]
    assert "larger than the input" in error["msg"]


def test_reshape_must_preserve_size() -> None:
    data = digits_mlp()
    data["model"]["layers"][0] = {"type": "reshape", "shape": [7, 9]}
    error = shape_error(data)
    assert error["loc"] == ["model", "layers", 0]
    assert "64 values" in error["msg"]


def _graph(nodes: list[dict[str, Any]], output: str) -> dict[str, Any]:
    return {
        "dataset": "builtin:iris",
        "model": {"nodes": nodes, "output": output},
        "loss": "cross_entropy",
    }


def test_concat_of_incompatible_shapes_names_the_node() -> None:
    nodes = [
        {"type": "dense", "units": 8, "name": "flat", "inputs": ["input"]},
        {"type": "reshape", "shape": [2, 2], "name": "square", "inputs": ["input"]},
        {"type": "concat", "name": "both", "inputs": ["flat", "square"]},
        {"type": "dense", "units": 3, "name": "out", "inputs": ["both"]},
    ]
    error = shape_error(_graph(nodes, "out"), "iris")
    assert error["loc"] == ["model", "nodes", 2]
    assert "both" in error["msg"] and "[8]" in error["msg"] and "[2, 2]" in error["msg"]


def test_graph_with_skip_connection_fits() -> None:
    nodes = [
        {"type": "dense", "units": 16, "activation": "relu", "name": "h1", "inputs": ["input"]},
        {"type": "dense", "units": 16, "activation": "relu", "name": "h2", "inputs": ["h1"]},
        {"type": "add", "name": "skip", "inputs": ["h1", "h2"]},
        {"type": "slice", "start": 0, "stop": 4, "name": "part", "inputs": ["input"]},
        {"type": "concat", "name": "joined", "inputs": ["skip", "part"]},
        {"type": "dense", "units": 3, "name": "logits", "inputs": ["joined"]},
    ]
    assert check_shapes(parse_spec(_graph(nodes, "logits")), load_builtin("iris").info).output == (
        3,
    )
