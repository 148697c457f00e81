"""Model files (core/export.py, docs/export.md): round trips, layout, errors, the torch recipe."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from core.data.dataset import Dataset, DatasetInfo
from core.export import FORMAT, export_model, import_model, write_model
from core.model import Model
from core.spec import JobSpec, parse_spec
from core.train import train
from tests.servers import missing

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
CNN_INPUT = (6, 6, 1)


def _spec(layers: list[dict[str, Any]], **extra: Any) -> JobSpec:
    return parse_spec(
        {"dataset": "builtin:digits", "model": {"layers": layers}, "loss": "cross_entropy", **extra}
    )


def _cnn_spec() -> JobSpec:
    return _spec(
        [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dropout", "rate": 0.1},
            {"type": "dense", "units": 3},
        ]
    )


@pytest.fixture(scope="module")
def cnn() -> tuple[JobSpec, Any, Any]:
    """A conv/batch-norm/dense model whose state has moved away from its initial values."""
    spec = _cnn_spec()
    model = Model(spec.model)
    params, state = model.init(jax.random.PRNGKey(0), CNN_INPUT)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, *CNN_INPUT))
    _, state = model.apply(params, state, x, train=True, key=jax.random.PRNGKey(2))
    return spec, params, state


def _assert_bit_identical(actual: Any, expected: Any) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype == np.float32
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _doc_block(containing: str) -> str:
    (block,) = [b for b in _doc_blocks() if containing in b]
    return block


@pytest.mark.parametrize("with_input_shape", [True, False])
def test_round_trip_is_bit_identical(cnn: Any, with_input_shape: bool) -> None:
    spec, params, state = cnn
    shape = CNN_INPUT if with_input_shape else None
    data = export_model(params, state, spec, input_shape=shape)

    got_params, got_state, got_spec = import_model(data)

    _assert_bit_identical(got_params, params)
    _assert_bit_identical(got_state, state)
    assert got_spec == spec
    assert set(got_state) == {"batch_norm_1"}


def test_round_trip_of_nested_params() -> None:
    spec = _spec([{"type": "transformer_block", "num_heads": 2, "ff_dim": 16}, {"type": "flatten"}])
    params, state = Model(spec.model).init(jax.random.PRNGKey(0), (5, 8))

    data = export_model(params, state, spec, input_shape=(5, 8))

    names = safetensors.numpy.load(data)
    assert names["transformer_block_0.attention.query.kernel"].shape == (8, 8)
    assert names["transformer_block_0.ff_hidden.kernel"].shape == (8, 16)
    got_params, got_state, _ = import_model(data)
    _assert_bit_identical(got_params, params)
    assert got_state == state == {}


def test_file_layout_and_metadata_follow_api_md(cnn: Any, tmp_path: Path) -> None:
    spec, params, state = cnn
    path = write_model(tmp_path / "model.safetensors", params, state, spec, input_shape=CNN_INPUT)

    tensors = safetensors.numpy.load(path.read_bytes())
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()

    assert {name: t.shape for name, t in tensors.items()} == {
        "conv2d_0.kernel": (3, 3, 1, 4),  # [kh, kw, in, out]
        "conv2d_0.bias": (4,),
        "batch_norm_1.scale": (4,),
        "batch_norm_1.bias": (4,),
        "batch_norm_1.mean": (4,),
        "batch_norm_1.var": (4,),
        "dense_4.kernel": (36, 8),  # [in, out]
        "dense_4.bias": (8,),
        "dense_6.kernel": (8, 3),
        "dense_6.bias": (3,),
    }
    assert all(t.dtype == np.float32 for t in tensors.values())
    np.testing.assert_array_equal(tensors["dense_4.kernel"], params["dense_4"]["kernel"])
    np.testing.assert_array_equal(tensors["batch_norm_1.var"], state["batch_norm_1"]["var"])
    assert metadata["format"] == FORMAT == "backprop/1"
    assert metadata["spec"] == spec.model_dump_json()
    assert parse_spec(json.loads(metadata["spec"])) == spec
    assert json.loads(metadata["state_tensors"]) == ["batch_norm_1.mean", "batch_norm_1.var"]
    assert json.loads(metadata["input_shape"]) == [6, 6, 1]
    _assert_bit_identical(import_model(path)[0], params)


def test_write_model_replaces_atomically_and_leaves_no_temp_files(cnn: Any, tmp_path: Path) -> None:
    spec, params, state = cnn
    target = tmp_path / "out" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"old")

    write_model(target, params, state, spec)

    assert [p.name for p in target.parent.iterdir()] == ["model.safetensors"]
    got_params, got_state, _ = import_model(target)
    _assert_bit_identical(got_params, params)
    _assert_bit_identical(got_state, state)


def test_files_that_are_not_backprop_models_are_refused(cnn: Any) -> None:
    spec, params, state = cnn
    good = export_model(params, state, spec, input_shape=CNN_INPUT)
    foreign = safetensors.numpy.save({"w": np.zeros(3, np.float32)}, {"format": "pt"})

    with pytest.raises(ValueError, match="not a safetensors file"):
        import_model(b"PK\x03\x04 this is a zip")
    with pytest.raises(ValueError, match="not a safetensors file"):
        import_model(b"abc")
    with pytest.raises(ValueError, match=r"not a Backprop model.*'pt'"):
        import_model(foreign)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        import_model(good[:-7])


def _rewritten(data: bytes, change: Any) -> bytes:
    """The file with its tensors passed through `change` and its metadata kept."""
    header_length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_length])["__metadata__"]
    tensors = dict(safetensors.numpy.load(data))
    change(tensors)
    return bytes(safetensors.numpy.save(tensors, metadata))


def test_tensors_that_do_not_fit_the_spec_are_refused_by_name_and_shape(cnn: Any) -> None:
    spec, params, state = cnn
    good = export_model(params, state, spec, input_shape=CNN_INPUT)

    def reshape(t: dict[str, np.ndarray]) -> None:
        t["dense_4.kernel"] = np.zeros((36, 9), np.float32)

    def drop(t: dict[str, np.ndarray]) -> None:
        del t["conv2d_0.bias"]

    def add(t: dict[str, np.ndarray]) -> None:
        t["dense_6.extra"] = np.zeros(3, np.float32)

    def widen(t: dict[str, np.ndarray]) -> None:
        t["dense_6.bias"] = t["dense_6.bias"].astype(np.float64)

    cases = [
        (reshape, r"'dense_4.kernel' has shape \[36, 9\]; the spec's model expects \[36, 8\]"),
        (drop, r"'conv2d_0.bias' is missing; the spec's model expects shape \[4\]"),
        (add, r"'dense_6.extra' is not part of the spec's model"),
        (widen, r"'dense_6.bias' is float64"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            import_model(_rewritten(good, change))


def test_state_marked_as_params_and_unknown_layers_are_refused(cnn: Any) -> None:
    spec, params, state = cnn
    swapped = {**params, "batch_norm_1": {**params["batch_norm_1"], **state["batch_norm_1"]}}

    with pytest.raises(ValueError, match=r"'batch_norm_1\.mean' is stored as a parameter"):
        export_model(swapped, {}, spec, input_shape=CNN_INPUT)
    with pytest.raises(ValueError, match=r"'dense_9\.kernel' names no layer"):
        export_model({**params, "dense_9": {"kernel": jnp.zeros(2)}}, state, spec)
    with pytest.raises(ValueError, match=r"'dense_4\.kernel' is int32"):
        export_model({**params, "dense_4": {"kernel": jnp.zeros(2, jnp.int32)}}, state, spec)


def test_doc_numpy_snippet_runs(cnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, params, state = cnn
    write_model(tmp_path / "model.safetensors", params, state, spec, input_shape=CNN_INPUT)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}

    exec(_doc_block("from safetensors.numpy import load_file"), namespace)

    assert namespace["spec"] == json.loads(spec.model_dump_json())
    assert "batch_norm_1.mean" not in namespace["trainable"]
    assert "batch_norm_1.scale" in namespace["trainable"]


def _blobs(n: int = 96) -> Dataset:
    """Three classes of 2×2 'images' (flattened by the model), linearly separable-ish."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2, 2)).astype(np.float32)
    y = np.argmax(x.reshape(n, 4) @ rng.normal(size=(4, 3)), axis=1).astype(np.int32)
    info = DatasetInfo("blobs", "npz", "classification", n, (2, 2), (), num_classes=3)
    return Dataset(x, y, info)


def test_doc_torch_recipe_matches_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import torch
    except ImportError:  # `make test` installs it (the `torch` extra); CI must run this
        missing("PyTorch is not installed", "pip install -e '.[torch]'")
    activations = ["relu", "gelu", "tanh", "elu", "leaky_relu", "silu", "sigmoid", "linear"]
    layers: list[dict[str, Any]] = [{"type": "flatten"}]
    for index, fn in enumerate(activations):
        layers.append({"type": "dense", "units": 8, "activation": fn, "use_bias": index != 2})
        if index == 0:
            layers.append({"type": "dropout", "rate": 0.1})
    layers += [{"type": "dense", "units": 3}, {"type": "activation", "fn": "softmax"}]
    spec = _spec(
        layers,
        dataset="builtin:blobs",
        optimizer={"type": "adam", "learning_rate": 0.01},
        training={"epochs": 3, "batch_size": 32},
    )
    data = _blobs()
    result = train(spec, data)
    assert result.steps_completed == 9
    write_model(
        tmp_path / "model.safetensors", result.params, result.model_state, spec, input_shape=(2, 2)
    )
    monkeypatch.chdir(tmp_path)
    features = np.array(data.x[:32])
    namespace: dict[str, Any] = {"features": features}

    exec(_doc_block("def load_torch_sequential"), namespace)
    exec(_doc_block("net = load_torch_sequential"), namespace)

    expected, _ = Model(spec.model).apply(result.params, result.model_state, features, train=False)
    got = namespace["outputs"]
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), atol=1e-5, rtol=0)
    assert not np.allclose(np.asarray(expected), np.asarray(expected)[:1])  # not a constant
