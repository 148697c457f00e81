"""Fully connected layer."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from core.activations import activation
from core.initializers import initializer
from core.layers.base import Layer, Params, Shape, ShapeMismatch, State, register
from core.spec.layers import Dense


@register("dense")
class DenseLayer(Layer[Dense]):
    """`y = act(x @ kernel + bias)` over the last axis; kernel is `[in, units]`.

    Inputs of rank > 1 per example (e.g. a sequence `[T, D]`) are transformed position by
    position, as in Keras.
    """

    def check(self, in_shapes: Sequence[Shape]) -> None:
        if len(in_shapes[0]) == 0:
            raise ShapeMismatch("expects features along a last axis, got a scalar per example")

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        k_kernel, k_bias = jax.random.split(key)
        fan_in = in_shapes[0][-1]
        params = {
            "kernel": initializer(self.spec.kernel_init)(
                k_kernel, (fan_in, self.spec.units), jnp.float32
            )
        }
        if self.spec.use_bias:
            params["bias"] = initializer(self.spec.bias_init)(
                k_bias, (self.spec.units,), jnp.float32
            )
        return params, {}

    def apply(self, params, state, inputs, *, train, key):
        y = inputs[0] @ params["kernel"]
        if "bias" in params:
            y = y + params["bias"]
        return activation(self.spec.activation)(y), state
