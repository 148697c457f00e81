"""Loss functions by spec `type`, each a per-example loss reduced with example weights.

Weights are 1 for real examples and 0 for the padding that fills the last batch of an
epoch to the fixed batch size, so every example counts once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from core.data.dataset import DatasetInfo
from core.spec.job import LossSpec

Shape = tuple[int, ...]


def align_targets(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """A scalar target per example meets a single output unit: `[B]` → `[B, 1]`."""
    if targets.ndim == outputs.ndim - 1 and outputs.shape[-1] == 1:
        return targets[..., None]
    return targets


def _per_example_mean(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).mean(axis=1)


def _cross_entropy(spec: LossSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    smoothing = getattr(spec, "label_smoothing", 0.0)

    def loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
        num_classes = logits.shape[-1]
        if jnp.issubdtype(targets.dtype, jnp.integer) and targets.ndim == logits.ndim - 1:
            if smoothing == 0.0:
                return _per_example_mean(
                    optax.softmax_cross_entropy_with_integer_labels(logits, targets)
                )
            targets = jax.nn.one_hot(targets, num_classes)
        if smoothing:
            targets = optax.smooth_labels(targets, smoothing)
        return _per_example_mean(optax.softmax_cross_entropy(logits, targets))

    return loss


def _binary_cross_entropy(spec: LossSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    def loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
        targets = align_targets(logits, targets).astype(logits.dtype)
        return _per_example_mean(optax.sigmoid_binary_cross_entropy(logits, targets))

    return loss


def _squared_error(mean: bool) -> Callable[[LossSpec], Callable[[jax.Array, jax.Array], jax.Array]]:
    def build(spec: LossSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
        def loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
            err = jnp.square(outputs - align_targets(outputs, targets).astype(outputs.dtype))
            flat = err.reshape(err.shape[0], -1)
            return flat.mean(axis=1) if mean else 0.5 * flat.sum(axis=1)

        return loss

    return build


LOSSES: dict[str, Callable[[LossSpec], Callable[[jax.Array, jax.Array], jax.Array]]] = {
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
    "mse": _squared_error(mean=True),
    "sse": _squared_error(mean=False),  # ½·Σ over outputs and batch: the 1986 error measure
}

# Losses that are sums over the batch rather than means.
SUMMED = frozenset({"sse"})


def per_example_loss(spec: LossSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`loss(outputs [B, ...], targets [B, ...]) -> [B]`, before weighting and reduction."""
    return LOSSES[spec.type](spec)


def loss_fn(spec: LossSpec) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """`loss(outputs [B, ...], targets [B, ...], weights [B]) -> scalar`."""
    per_example = per_example_loss(spec)
    summed = spec.type in SUMMED

    def loss(outputs: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
        total = jnp.sum(per_example(outputs, targets) * weights)
        return total if summed else total / jnp.maximum(jnp.sum(weights), 1.0)

    return loss


def check_output_shape(spec: LossSpec, output: Shape, info: DatasetInfo) -> str | None:
    """Why the model's per-example output cannot meet the dataset's targets, or None."""
    target = tuple(info.target_shape)
    if spec.type == "cross_entropy":
        if info.task != "classification" or not info.num_classes:
            return "cross_entropy needs a classification dataset; use mse for regression targets"
        if output == (*target, info.num_classes) or (target and output == target):
            return None
        return (
            f"outputs shape {list(output)} but the dataset has {info.num_classes} classes: the "
            f"last layer needs shape {[*target, info.num_classes]} (e.g. dense units="
            f"{info.num_classes}, no softmax: cross_entropy takes logits)"
        )
    multiclass = info.task == "classification" and (info.num_classes or 2) > 2 and target == ()
    if spec.type == "binary_cross_entropy" and multiclass:
        return (
            f"binary_cross_entropy needs 0/1 targets but the dataset has "
            f"{info.num_classes} classes; use cross_entropy"
        )
    if output == target or (output[-1:] == (1,) and output[:-1] == target):
        return None
    want = list(target) or [1]
    return (
        f"outputs shape {list(output)} but the targets have shape {list(target)}: "
        f"the last layer needs shape {want}"
    )
