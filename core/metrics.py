"""Metrics by spec `type`: per-example values averaged with the example weights."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from core.losses import align_targets
from core.spec.job import LossSpec, MetricSpec

PerExample = Callable[[jax.Array, jax.Array], jax.Array]  # (outputs, targets) -> [B]


def _flat_mean(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).astype(jnp.float32).mean(axis=1)


def _accuracy(metric: MetricSpec, loss: LossSpec) -> PerExample:
    # A single output unit is a binary classifier: logits (binary_cross_entropy) are
    # thresholded at 0, probabilities (a sigmoid trained with mse/sse) at 0.5.
    threshold = 0.0 if loss.type == "binary_cross_entropy" else 0.5

    binary_loss = loss.type == "binary_cross_entropy"

    def accuracy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
        if binary_loss or outputs.shape[-1] == 1:
            predicted = outputs > threshold
            return _flat_mean(predicted == (align_targets(outputs, targets) > 0.5))
        if outputs.ndim == targets.ndim:  # one-hot targets
            targets = jnp.argmax(targets, axis=-1)
        return _flat_mean(jnp.argmax(outputs, axis=-1) == targets)

    return accuracy


def _top_k_accuracy(metric: MetricSpec, loss: LossSpec) -> PerExample:
    k = getattr(metric, "k", 5)

    def top_k(outputs: jax.Array, targets: jax.Array) -> jax.Array:
        if outputs.ndim == targets.ndim:
            targets = jnp.argmax(targets, axis=-1)
        _, top = jax.lax.top_k(outputs, min(k, outputs.shape[-1]))
        return _flat_mean(jnp.any(top == targets[..., None], axis=-1))

    return top_k


def _mae(metric: MetricSpec, loss: LossSpec) -> PerExample:
    def mae(outputs: jax.Array, targets: jax.Array) -> jax.Array:
        return _flat_mean(jnp.abs(outputs - align_targets(outputs, targets).astype(outputs.dtype)))

    return mae


METRICS: dict[str, Callable[[MetricSpec, LossSpec], PerExample]] = {
    "accuracy": _accuracy,
    "top_k_accuracy": _top_k_accuracy,
    "mae": _mae,
}


def metric_fns(metrics: list[MetricSpec], loss: LossSpec) -> dict[str, PerExample]:
    """Per-example metric functions by name, in spec order."""
    return {m.type: METRICS[m.type](m, loss) for m in metrics}
