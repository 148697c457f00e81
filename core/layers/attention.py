"""Multi-head self-attention and the pre-LayerNorm transformer block over `[time, features]`.

Parameters are nested dicts of dense projections, each `{"kernel": [in, out], "bias": [out]}`,
so exported tensor names read `<layer>.query.kernel`, `<layer>.output.bias`, and for a
transformer block `<layer>.attention.query.kernel`, `<layer>.ff_hidden.kernel`, ….
Projection kernels pack the heads head-major along their last axis: column
`h·head_dim + j` is feature j of head h.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from core.activations import activation
from core.layers.base import Layer, Params, Shape, ShapeMismatch, State, register
from core.layers.normalization import dropout, layer_norm
from core.layers.sequence import expect_sequence
from core.spec.layers import Attention, TransformerBlock

# The layer_norm spec's default, so a block computes the same as the graph of separate
# layer_norm / attention / dense / dropout / add nodes it stands for.
LAYER_NORM_EPSILON = 1e-3


def dense_params(key: jax.Array, fan_in: int, fan_out: int) -> Params:
    """`{"kernel": [fan_in, fan_out] glorot-uniform, "bias": [fan_out] zeros}`."""
    return {
        "kernel": jinit.glorot_uniform()(key, (fan_in, fan_out), jnp.float32),
        "bias": jnp.zeros((fan_out,), jnp.float32),
    }


def _dense(x: jax.Array, params: Params) -> jax.Array:
    return x @ params["kernel"] + params["bias"]


def attention_params(key: jax.Array, features: int, num_heads: int, head_dim: int) -> Params:
    """Params of `multi_head_attention`: `query`, `key`, `value` projections
    `[features, num_heads·head_dim]` and an `output` projection `[num_heads·head_dim, features]`.
    """
    k_q, k_k, k_v, k_o = jax.random.split(key, 4)
    width = num_heads * head_dim
    return {
        "query": dense_params(k_q, features, width),
        "key": dense_params(k_k, features, width),
        "value": dense_params(k_v, features, width),
        "output": dense_params(k_o, width, features),
    }


def multi_head_attention(
    x: jax.Array, params: Params, *, num_heads: int, head_dim: int, causal: bool
) -> jax.Array:
    """Scaled dot-product self-attention.

    Args:
      x: `[B, T, D]`.
      params: as made by `attention_params`.
      num_heads, head_dim: H and the per-head width.
      causal: when true, position t attends only to positions ≤ t.

    Returns:
      `[B, T, D]`.
    """
    batch, time = x.shape[0], x.shape[1]

    def heads(p: Params) -> jax.Array:
        return _dense(x, p).reshape(batch, time, num_heads, head_dim)

    q, k, v = heads(params["query"]), heads(params["key"]), heads(params["value"])
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
    # Softmax in at least float32: exp and the normaliser lose too much in half precision.
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if causal:
        allowed = jnp.tril(jnp.ones((time, time), dtype=bool))
        # The dtype's finite minimum rather than -inf keeps every logit (and so gradients
        # through `where`) finite, while exp() of it is still exactly 0; the diagonal is
        # always allowed, so no row is fully masked.
        logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, time, num_heads * head_dim)
    return _dense(mixed, params["output"])


@register("attention")
class AttentionLayer(Layer[Attention]):
    """Multi-head self-attention: `[T, D]` → `[T, D]`.

    Params (nested): `query`, `key`, `value` each `{"kernel": [D, num_heads·head_dim],
    "bias": [num_heads·head_dim]}`; `output` `{"kernel": [num_heads·head_dim, D], "bias": [D]}`.
    """

    def check(self, in_shapes: Sequence[Shape]) -> None:
        expect_sequence(in_shapes[0])

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        spec = self.spec
        return attention_params(key, in_shapes[0][-1], spec.num_heads, spec.head_dim), {}

    def apply(
        self,
        params: Params,
        state: State,
        inputs: Sequence[jax.Array],
        *,
        train: bool,
        key: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        spec = self.spec
        y = multi_head_attention(
            inputs[0], params, num_heads=spec.num_heads, head_dim=spec.head_dim, causal=spec.causal
        )
        return y, state


@register("transformer_block")
class TransformerBlockLayer(Layer[TransformerBlock]):
    """Pre-LayerNorm transformer block: `[T, D]` → `[T, D]`.

    `x + Dropout(MHA(LN(x)))`, then `x + Dropout(FF(LN(x)))` with
    `FF = dense(ff_dim, gelu) → dense(D)`; heads have width `D // num_heads`.

    Params (nested): `attention_norm` and `ff_norm` `{"scale": [D], "bias": [D]}`;
    `attention` as in the attention layer with `head_dim = D // num_heads`;
    `ff_hidden` `{"kernel": [D, ff_dim], "bias": [ff_dim]}`;
    `ff_output` `{"kernel": [ff_dim, D], "bias": [D]}`.
    """

    def __init__(self, spec: TransformerBlock):
        super().__init__(spec)
        # Per instance: only a block with dropout needs a key, and the model only derives
        # keys for layers that ask for one.
        self.uses_rng = spec.dropout > 0

    def check(self, in_shapes: Sequence[Shape]) -> None:
        expect_sequence(in_shapes[0])
        features, heads = in_shapes[0][-1], self.spec.num_heads
        if features % heads:
            raise ShapeMismatch(
                f"the feature size {features} (last axis of input shape {list(in_shapes[0])}) "
                f"must be divisible by num_heads {heads}; each head gets features // num_heads"
            )

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        d, ff = in_shapes[0][-1], self.spec.ff_dim
        k_attn, k_hidden, k_out = jax.random.split(key, 3)
        norm = {"scale": jnp.ones((d,), jnp.float32), "bias": jnp.zeros((d,), jnp.float32)}
        params = {
            "attention_norm": norm,
            "attention": attention_params(k_attn, d, self.spec.num_heads, d // self.spec.num_heads),
            "ff_norm": dict(norm),
            "ff_hidden": dense_params(k_hidden, d, ff),
            "ff_output": dense_params(k_out, ff, d),
        }
        return params, {}

    def apply(
        self,
        params: Params,
        state: State,
        inputs: Sequence[jax.Array],
        *,
        train: bool,
        key: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        spec, x = self.spec, inputs[0]
        rate = spec.dropout
        k_attn: jax.Array | None = None
        k_ff: jax.Array | None = None
        if train and rate > 0:
            assert key is not None, "a transformer block with dropout needs a PRNG key in training"
            # One key per dropout site, split by role, so masks depend only on the given key.
            k_attn, k_ff = jax.random.split(key)

        heads = spec.num_heads
        h = layer_norm(x, params["attention_norm"], LAYER_NORM_EPSILON)
        h = multi_head_attention(
            h,
            params["attention"],
            num_heads=heads,
            head_dim=x.shape[-1] // heads,
            causal=spec.causal,
        )
        x = x + dropout(h, rate, train=train, key=k_attn)

        h = layer_norm(x, params["ff_norm"], LAYER_NORM_EPSILON)
        h = _dense(activation("gelu")(_dense(h, params["ff_hidden"])), params["ff_output"])
        return x + dropout(h, rate, train=train, key=k_ff), state
