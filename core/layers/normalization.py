"""Per-feature transforms: batch_norm, layer_norm, dropout, activation."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from core.activations import activation
from core.layers.base import Layer, Params, Shape, ShapeMismatch, State, register
from core.spec.layers import ActivationLayer, BatchNorm, Dropout, LayerNorm


def _channels(in_shape: Shape) -> int:
    if not in_shape:
        raise ShapeMismatch("expects features along a last axis, got a scalar per example")
    return in_shape[-1]


@register("batch_norm")
class BatchNormLayer(Layer[BatchNorm]):
    """Normalises each channel (last axis) over the batch and every other axis.

    Training uses the batch's statistics and updates the running mean/variance with
    `momentum` (Keras' convention: new = momentum·old + (1 − momentum)·batch); evaluation
    uses the running statistics.
    """

    def check(self, in_shapes: Sequence[Shape]) -> None:
        _channels(in_shapes[0])

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        c = _channels(in_shapes[0])
        params = {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}
        state = {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
        return params, state

    def apply(self, params, state, inputs, *, train, key):
        x = inputs[0]
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            m = self.spec.momentum
            state = {
                "mean": m * state["mean"] + (1 - m) * jax.lax.stop_gradient(mean),
                "var": m * state["var"] + (1 - m) * jax.lax.stop_gradient(var),
            }
        else:
            mean, var = state["mean"], state["var"]
        y = (x - mean) * jax.lax.rsqrt(var + self.spec.epsilon)
        return y * params["scale"] + params["bias"], state


@register("layer_norm")
class LayerNormLayer(Layer[LayerNorm]):
    """Normalises each position over its last axis, then scales and shifts."""

    def check(self, in_shapes: Sequence[Shape]) -> None:
        _channels(in_shapes[0])

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        c = _channels(in_shapes[0])
        return {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}, {}

    def apply(self, params, state, inputs, *, train, key):
        return layer_norm(inputs[0], params, self.spec.epsilon), state


def layer_norm(x: jax.Array, params: Params, epsilon: float) -> jax.Array:
    """Normalise over the last axis; shared with the transformer block."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + epsilon) * params["scale"] + params["bias"]


@register("dropout")
class DropoutLayer(Layer[Dropout]):
    """Inverted dropout: scales kept values by 1/(1 − rate) in training, identity otherwise."""

    uses_rng = True

    def apply(self, params, state, inputs, *, train, key):
        return dropout(inputs[0], self.spec.rate, train=train, key=key), state


def dropout(x: jax.Array, rate: float, *, train: bool, key: jax.Array | None) -> jax.Array:
    if not train or rate == 0.0:
        return x
    assert key is not None, "dropout in training needs a PRNG key"
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


@register("activation")
class ActivationLayerImpl(Layer[ActivationLayer]):
    def apply(self, params, state, inputs, *, train, key):
        return activation(self.spec.fn)(inputs[0]), state
