"""The jitted pieces of training: a scan over a chunk of steps, and batch evaluation.

One dispatch runs a whole chunk of optimizer steps inside `lax.scan`, with the data
resident on the device and gathered by index inside the loop, so Python is never on the
per-step path. Hyperparameters live in the optimizer state (inject_hyperparams), so jobs
that differ only in them reuse the same compiled program.

Batches are cut from the epoch's order (a permutation of the examples made on the
device): step s takes positions [s·B, (s+1)·B). Positions past the end wrap around to
the start of the order with weight 0, so the last batch keeps the static batch shape
while every example counts exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from core.model import Model


class TrainState(NamedTuple):
    params: Any
    model_state: Any
    opt_state: Any


class StepStats(NamedTuple):
    """Per-step results; each field has a leading [chunk] axis after the scan."""

    loss: jax.Array  # the batch loss the step minimised
    weight: jax.Array  # number of real (non-padding) examples in the batch
    metric_sums: dict[str, jax.Array]  # Σ over real examples of each per-example metric
    grad_norm: jax.Array
    finite: jax.Array  # False where loss or gradient norm was NaN/inf


LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
MetricFns = dict[str, Callable[[jax.Array, jax.Array], jax.Array]]


@dataclass(frozen=True)
class Batching:
    """How an epoch of `num_examples` is cut into `steps` batches of `size`."""

    num_examples: int
    size: int

    @classmethod
    def for_size(cls, num_examples: int, batch_size: int | str) -> Batching:
        size = num_examples if batch_size == "full" else min(int(batch_size), num_examples)
        return cls(num_examples, size)

    @property
    def steps(self) -> int:
        return -(-self.num_examples // self.size)

    def batch(self, order: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Example indices [B] and weights [B] of `step` (traced) within the epoch."""
        positions = step * self.size + jnp.arange(self.size)
        real = positions < self.num_examples
        return order[positions % self.num_examples], real.astype(jnp.float32)


def make_chunk_fn(
    model: Model,
    loss: LossFn,
    metrics: MetricFns,
    tx: optax.GradientTransformation,
    batching: Batching,
    chunk: int,
    unroll: int = 1,
) -> Callable[..., tuple[TrainState, StepStats]]:
    """Build `run(state, x, y, epoch_key, order, start) -> (state, StepStats[chunk])`.

    Args (of the returned function):
      state: TrainState, donated.
      x, y: the whole training set on the device, [N, ...].
      epoch_key: PRNG key of the epoch; step keys are `fold_in(epoch_key, step)`.
      order: [N] the epoch's example order.
      start: first step of the chunk within the epoch; the chunk must end within the
        epoch (the loop compiles a shorter chunk for an epoch's remainder, rather than
        skipping steps with a conditional, which would cost XLA its in-place updates).
    """

    def one_step(
        state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array, idx: jax.Array, w: jax.Array
    ) -> tuple[TrainState, StepStats]:
        xb, yb = x[idx], y[idx]

        def objective(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            out, new_model_state = model.apply(params, state.model_state, xb, train=True, key=key)
            return loss(out, yb, w), (out, new_model_state)

        (value, (out, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums = {name: jnp.sum(fn(out, yb) * w) for name, fn in metrics.items()}
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
        stats = StepStats(value, jnp.sum(w), sums, grad_norm, finite)
        return TrainState(params, model_state, opt_state), stats

    def run(
        state: TrainState,
        x: jax.Array,
        y: jax.Array,
        epoch_key: jax.Array,
        order: jax.Array,
        start: jax.Array,
    ) -> tuple[TrainState, StepStats]:
        def body(carry: TrainState, step: jax.Array) -> tuple[TrainState, StepStats]:
            idx, w = batching.batch(order, step)
            return one_step(carry, x, y, jax.random.fold_in(epoch_key, step), idx, w)

        return jax.lax.scan(body, state, start + jnp.arange(chunk), unroll=unroll)

    return jax.jit(run, donate_argnums=0)


def make_eval_fn(
    model: Model,
    loss_per_example: Callable[[jax.Array, jax.Array], jax.Array],
    metrics: MetricFns,
    batching: Batching,
) -> Callable[..., dict[str, jax.Array]]:
    """Build `evaluate(params, model_state, x, y, step) -> {"loss": Σ, name: Σ, "weight": Σ}`
    for batch `step` of the (unshuffled) evaluation set."""
    order = jnp.arange(batching.num_examples)

    def evaluate(
        params: Any, model_state: Any, x: jax.Array, y: jax.Array, step: jax.Array
    ) -> dict[str, jax.Array]:
        idx, w = batching.batch(order, step)
        out, _ = model.apply(params, model_state, x[idx], train=False)
        yb = y[idx]
        sums = {name: jnp.sum(fn(out, yb) * w) for name, fn in metrics.items()}
        return {"loss": jnp.sum(loss_per_example(out, yb) * w), **sums, "weight": jnp.sum(w)}

    return jax.jit(evaluate)
