"""Layers that only move values around: flatten, reshape, slice, concat, add."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from core.layers.base import Layer, Shape, ShapeMismatch, register
from core.spec.layers import Add, Concat, Flatten, Reshape, Slice


@register("flatten")
class FlattenLayer(Layer[Flatten]):
    def apply(self, params, state, inputs, *, train, key):
        x = inputs[0]
        return x.reshape(x.shape[0], -1), state


@register("reshape")
class ReshapeLayer(Layer[Reshape]):
    def check(self, in_shapes: Sequence[Shape]) -> None:
        target = self.spec.shape
        size = math.prod(in_shapes[0])
        if target.count(-1) > 1:
            raise ShapeMismatch(
                f"shape {target} has more than one -1; at most one size can be inferred"
            )
        known = math.prod(d for d in target if d != -1)
        fits = size % known == 0 if -1 in target and known else size == known
        if not fits or 0 in target:
            raise ShapeMismatch(
                f"cannot reshape an example of shape {list(in_shapes[0])} ({size} values) "
                f"into {target}"
            )

    def apply(self, params, state, inputs, *, train, key):
        x = inputs[0]
        return x.reshape(x.shape[0], *self.spec.shape), state


@register("slice")
class SliceLayer(Layer[Slice]):
    """Keeps `[start:stop]` of the last axis (Python slice semantics, negatives allowed)."""

    def check(self, in_shapes: Sequence[Shape]) -> None:
        shape = in_shapes[0]
        if not shape:
            raise ShapeMismatch("expects features along a last axis, got a scalar per example")
        if len(range(shape[-1])[self.spec.start : self.spec.stop]) == 0:
            raise ShapeMismatch(
                f"[{self.spec.start}:{self.spec.stop}] of a last axis of size {shape[-1]} is empty"
            )

    def apply(self, params, state, inputs, *, train, key):
        return inputs[0][..., self.spec.start : self.spec.stop], state


@register("concat")
class ConcatLayer(Layer[Concat]):
    def check(self, in_shapes: Sequence[Shape]) -> None:
        rank = len(in_shapes[0])
        axis = self.spec.axis
        if not -rank <= axis < rank:
            raise ShapeMismatch(f"axis {axis} is out of range for inputs of rank {rank}")
        axis %= rank
        for shape in in_shapes:
            others = [d for i, d in enumerate(shape) if i != axis]
            first = [d for i, d in enumerate(in_shapes[0]) if i != axis]
            if len(shape) != rank or others != first:
                shapes = ", ".join(str(list(s)) for s in in_shapes)
                raise ShapeMismatch(
                    f"inputs must match on every axis except {self.spec.axis}; got shapes {shapes}"
                )

    def apply(self, params, state, inputs, *, train, key):
        axis = self.spec.axis
        # Per-example axis → batched axis: non-negative axes shift past the batch dimension.
        return jnp.concatenate(inputs, axis=axis + 1 if axis >= 0 else axis), state


@register("add")
class AddLayer(Layer[Add]):
    def check(self, in_shapes: Sequence[Shape]) -> None:
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            shapes = ", ".join(str(list(s)) for s in in_shapes)
            raise ShapeMismatch(f"inputs must all have the same shape; got {shapes}")

    def apply(self, params, state, inputs, *, train, key):
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total, state
