"""Shapes, layouts and semantics of the sequence layers: embedding, rnn/lstm/gru, attention,
transformer_block. Gradients are checked in test_layers_gradcheck.py."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.layers import Layer, ShapeMismatch, build_layer
from core.layers.attention import LAYER_NORM_EPSILON
from core.layers.base import Params, Shape
from core.spec.layers import (
    GRU,
    LSTM,
    Attention,
    Dense,
    Embedding,
    LayerNorm,
    SimpleRNN,
    TransformerBlock,
)

# Init and apply are jitted: op-by-op dispatch would dominate these tiny tests' runtime.


@partial(jax.jit, static_argnames=("layer", "shape"))
def _init(layer: Layer[Any], shape: Shape) -> Params:
    return layer.init(jax.random.PRNGKey(0), [shape])[0]  # these layers have no state


@partial(jax.jit, static_argnames=("layer", "train"))
def _apply(
    layer: Layer[Any], params: Params, x: Any, *, train: bool = False, key: jax.Array | None = None
) -> jax.Array:
    return layer.apply(params, {}, [x], train=train, key=key)[0]


def _run(spec: Any, x: np.ndarray) -> tuple[jax.Array, Params]:
    layer = build_layer(spec)
    layer.check([x.shape[1:]])
    params = _init(layer, tuple(x.shape[1:]))
    return _apply(layer, params, jnp.asarray(x)), params


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_embedding_looks_up_rows_of_rounded_float_ids() -> None:
    spec = Embedding(type="embedding", name="e", vocab_size=5, dim=3)
    ids = np.array([[0.0, 4.0, 2.0000002, 1.9999998]], np.float32)
    out, params = _run(spec, ids)
    table = np.asarray(params["embeddings"])
    assert out.shape == (1, 4, 3)
    np.testing.assert_array_equal(out[0], table[[0, 4, 2, 2]])


def test_embedding_of_one_id_per_example() -> None:
    out, params = _run(Embedding(type="embedding", name="e", vocab_size=5, dim=3), np.array([3.0]))
    assert out.shape == (1, 3)
    np.testing.assert_array_equal(out[0], params["embeddings"][3])


def test_embedding_maps_out_of_range_ids_to_zeros() -> None:
    out, _ = _run(
        Embedding(type="embedding", name="e", vocab_size=5, dim=3),
        np.array([[-1, 5, 4.6, 1e10, np.nan]]),
    )
    np.testing.assert_array_equal(out, np.zeros((1, 5, 3)))


@pytest.mark.parametrize(
    ("spec", "gates", "bias_shape"),
    [
        (SimpleRNN(type="rnn", name="r", units=4), 1, (4,)),
        (LSTM(type="lstm", name="l", units=4), 4, (16,)),
        (GRU(type="gru", name="g", units=4), 3, (2, 12)),
    ],
    ids=["rnn", "lstm", "gru"],
)
def test_recurrent_params_use_keras_layouts(
    spec: Any, gates: int, bias_shape: tuple[int, ...]
) -> None:
    params = _init(build_layer(spec), (5, 3))
    assert params["kernel"].shape == (3, gates * 4)
    assert params["recurrent_kernel"].shape == (4, gates * 4)
    assert params["bias"].shape == bias_shape
    # Orthogonal recurrent kernel: orthonormal rows since units ≤ gates·units.
    u = np.asarray(params["recurrent_kernel"])
    np.testing.assert_allclose(u @ u.T, np.eye(4), atol=1e-5)


def test_lstm_forget_gate_bias_starts_at_one() -> None:
    params = _init(build_layer(LSTM(type="lstm", name="l", units=2)), (5, 3))
    np.testing.assert_array_equal(params["bias"], [0, 0, 1, 1, 0, 0, 0, 0])


@pytest.mark.parametrize(("kind", "name"), [(SimpleRNN, "rnn"), (LSTM, "lstm"), (GRU, "gru")])
def test_recurrent_output_shapes(kind: Any, name: str) -> None:
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    last, _ = _run(kind(type=name, name="r", units=4), x)
    seq, _ = _run(kind(type=name, name="r", units=4, return_sequences=True), x)
    assert last.shape == (2, 4)
    assert seq.shape == (2, 5, 4)
    np.testing.assert_allclose(seq[:, -1], last, rtol=1e-6)


def test_lstm_matches_a_step_by_step_reference() -> None:
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    out, p = _run(LSTM(type="lstm", name="l", units=2, return_sequences=True), x)
    w, u, b = (np.asarray(p[k], np.float64) for k in ("kernel", "recurrent_kernel", "bias"))
    h = c = np.zeros((2, 2))
    for t in range(4):
        i, f, g, o = np.split(x[:, t] @ w + h @ u + b, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        np.testing.assert_allclose(out[:, t], h, rtol=1e-5, atol=1e-6)


def test_gru_matches_a_step_by_step_reference_with_reset_after() -> None:
    x = np.random.default_rng(2).standard_normal((2, 4, 3))
    layer = build_layer(GRU(type="gru", name="g", units=2, return_sequences=True))
    params = _init(layer, (4, 3))
    params["bias"] = jnp.asarray(np.random.default_rng(3).standard_normal((2, 6)), jnp.float32)
    out = _apply(layer, params, jnp.asarray(x, jnp.float32))
    w, u, b = (np.asarray(params[k], np.float64) for k in ("kernel", "recurrent_kernel", "bias"))
    h = np.zeros((2, 2))
    for t in range(4):
        x_z, x_r, x_h = np.split(x[:, t] @ w + b[0], 3, axis=-1)
        h_z, h_r, h_h = np.split(h @ u + b[1], 3, axis=-1)
        z, r = _sigmoid(x_z + h_z), _sigmoid(x_r + h_r)
        h = z * h + (1 - z) * np.tanh(x_h + r * h_h)
        np.testing.assert_allclose(out[:, t], h, rtol=1e-5, atol=1e-6)


def test_attention_params_and_output_shape() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
    out, p = _run(Attention(type="attention", name="a", num_heads=2, head_dim=3), x)
    assert out.shape == (2, 5, 6)
    assert {k: v["kernel"].shape for k, v in p.items()} == {
        "query": (6, 6),
        "key": (6, 6),
        "value": (6, 6),
        "output": (6, 6),
    }


@pytest.mark.parametrize(
    "spec",
    [
        Attention(type="attention", name="a", num_heads=2, head_dim=3, causal=True),
        TransformerBlock(type="transformer_block", name="t", num_heads=2, ff_dim=8, causal=True),
    ],
    ids=["attention", "transformer_block"],
)
def test_causal_mask_hides_future_positions(spec: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 4)).astype(np.float32)
    changed = x.copy()
    changed[:, 3:] += rng.standard_normal((1, 2, 4)).astype(np.float32)
    before, after = _run(spec, np.concatenate([x, changed]))[0]
    np.testing.assert_array_equal(before[:3], after[:3])
    assert not np.allclose(before[3:], after[3:])


def test_non_causal_attention_sees_future_positions() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 4)).astype(np.float32)
    changed = x.copy()
    changed[:, -1] += 1.0
    spec = Attention(type="attention", name="a", num_heads=2, head_dim=3)
    before, after = _run(spec, np.concatenate([x, changed]))[0]
    assert not np.allclose(before[0], after[0])


def test_transformer_block_equals_its_separate_layers() -> None:
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 4)), jnp.float32)
    spec = TransformerBlock(type="transformer_block", name="t", num_heads=2, ff_dim=8)
    block = build_layer(spec)
    p = _init(block, (5, 4))
    out = _apply(block, p, x)

    def layer(s: Any, params: Any, h: jax.Array) -> jax.Array:
        return _apply(build_layer(s), params, h)

    norm = LayerNorm(type="layer_norm", name="n", epsilon=LAYER_NORM_EPSILON)
    attention = Attention(type="attention", name="a", num_heads=2, head_dim=2)
    h = x + layer(attention, p["attention"], layer(norm, p["attention_norm"], x))
    hidden = layer(
        Dense(type="dense", name="h", units=8, activation="gelu"),
        p["ff_hidden"],
        layer(norm, p["ff_norm"], h),
    )
    expected = h + layer(Dense(type="dense", name="o", units=4), p["ff_output"], hidden)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_transformer_dropout_is_keyed_and_training_only() -> None:
    spec = TransformerBlock(type="transformer_block", name="t", num_heads=2, ff_dim=8, dropout=0.5)
    block = build_layer(spec)
    assert block.uses_rng
    assert not build_layer(spec.model_copy(update={"dropout": 0.0})).uses_rng
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 4)), jnp.float32)
    p = _init(block, (5, 4))

    def run(train: bool, key: jax.Array | None) -> np.ndarray:
        return np.asarray(_apply(block, p, x, train=train, key=key))

    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    np.testing.assert_array_equal(run(True, k1), run(True, k1))
    assert not np.allclose(run(True, k1), run(True, k2))
    np.testing.assert_array_equal(run(False, None), run(False, k1))


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        (
            LSTM(type="lstm", name="l", units=2),
            (64,),
            r"sequence \(time, features\) \(rank 2\), got shape \[64\]; add an embedding",
        ),
        (GRU(type="gru", name="g", units=2), (4, 4, 1), r"\(rank 2\), got shape \[4, 4, 1\]"),
        (SimpleRNN(type="rnn", name="r", units=2), (0, 3), r"empty sequence"),
        (
            Attention(type="attention", name="a", num_heads=1, head_dim=2),
            (8,),
            r"\(time, features\)",
        ),
        (
            Embedding(type="embedding", name="e", vocab_size=3, dim=2),
            (8, 8),
            r"token ids .* got shape \[8, 8\]; add a flatten",
        ),
        (
            TransformerBlock(type="transformer_block", name="t", num_heads=3, ff_dim=4),
            (5, 4),
            r"feature size 4 .* divisible by num_heads 3",
        ),
    ],
    ids=["lstm-rank1", "gru-rank3", "rnn-empty", "attention-rank1", "embedding-rank2", "heads"],
)
def test_check_rejects_wrong_shapes_helpfully(
    spec: Any, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ShapeMismatch, match=message):
        build_layer(spec).check([shape])
