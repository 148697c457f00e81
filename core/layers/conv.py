"""Convolution and pooling over `[height, width, channels]` examples (NHWC batches)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from core import ops
from core.activations import activation
from core.initializers import initializer
from core.layers.base import Layer, Params, Shape, ShapeMismatch, State, expect_rank, register
from core.spec.layers import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D

IMAGE = "(height, width, channels) — an image; add a reshape layer for flat features"


def _out_size(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - window) // stride + 1


def _check_window(
    in_shape: Shape, window: Sequence[int], strides: Sequence[int], padding: str
) -> None:
    expect_rank(in_shape, 3, IMAGE)
    for axis, (size, win) in enumerate(zip(in_shape[:2], window, strict=True)):
        if padding == "valid" and win > size:
            dim = ("height", "width")[axis]
            raise ShapeMismatch(
                f"window {list(window)} is larger than the input {dim} {size} with padding "
                f"'valid' (input shape {list(in_shape)}); use a smaller window or padding 'same'"
            )
    if any(
        _out_size(s, w, st, padding) <= 0
        for s, w, st in zip(in_shape[:2], window, strides, strict=True)
    ):
        raise ShapeMismatch(f"the output would be empty for input shape {list(in_shape)}")


@register("conv2d")
class Conv2DLayer(Layer[Conv2D]):
    """2-D convolution; kernel `[kh, kw, in, filters]`, bias `[filters]`."""

    def check(self, in_shapes: Sequence[Shape]) -> None:
        _check_window(in_shapes[0], self.spec.kernel_size, self.spec.strides, self.spec.padding)

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        k_kernel, k_bias = jax.random.split(key)
        kh, kw = self.spec.kernel_size
        shape = (kh, kw, in_shapes[0][-1], self.spec.filters)
        params = {"kernel": initializer(self.spec.kernel_init)(k_kernel, shape, jnp.float32)}
        if self.spec.use_bias:
            params["bias"] = initializer(self.spec.bias_init)(
                k_bias, (self.spec.filters,), jnp.float32
            )
        return params, {}

    def apply(self, params, state, inputs, *, train, key):
        y = ops.conv2d(
            inputs[0],
            params["kernel"],
            strides=tuple(self.spec.strides),
            padding=self.spec.padding.upper(),
        )
        if "bias" in params:
            y = y + params["bias"]
        return activation(self.spec.activation)(y), state


class _Pool(Layer[MaxPool2D | AvgPool2D]):
    def _strides(self) -> tuple[int, int]:
        return tuple(self.spec.strides or self.spec.pool_size)  # type: ignore[return-value]

    def check(self, in_shapes: Sequence[Shape]) -> None:
        _check_window(in_shapes[0], self.spec.pool_size, self._strides(), self.spec.padding)


@register("max_pool2d")
class MaxPool2DLayer(_Pool):
    def apply(self, params, state, inputs, *, train, key):
        pool = tuple(self.spec.pool_size)
        return ops.max_pool2d(inputs[0], pool, self._strides(), self.spec.padding.upper()), state


@register("avg_pool2d")
class AvgPool2DLayer(_Pool):
    def apply(self, params, state, inputs, *, train, key):
        pool = tuple(self.spec.pool_size)
        return ops.avg_pool2d(inputs[0], pool, self._strides(), self.spec.padding.upper()), state


@register("global_avg_pool2d")
class GlobalAvgPool2DLayer(Layer[GlobalAvgPool2D]):
    def check(self, in_shapes: Sequence[Shape]) -> None:
        expect_rank(in_shapes[0], 3, IMAGE)

    def apply(self, params, state, inputs, *, train, key):
        return jnp.mean(inputs[0], axis=(1, 2)), state
