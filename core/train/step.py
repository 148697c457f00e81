"""The jitted pieces of training: one optimizer step, a scan over steps, batch evaluation.

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
    # Data parallel: how each batch is split over the devices (`parallel.Placement`);
    # None on one device, where batches carry no sharding constraint.
    sharding: Any = None

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
        idx, w = order[positions % self.num_examples], real.astype(jnp.float32)
        if self.sharding is not None:
            # Each device gathers and runs its slice of the batch; the gradient's sum over
            # the batch becomes an all-reduce.
            idx, w = jax.lax.with_sharding_constraint((idx, w), self.sharding)
        return idx, w


TrainStep = Callable[..., tuple[TrainState, StepStats]]


def make_train_step(
    model: Model, loss: LossFn, metrics: MetricFns, tx: optax.GradientTransformation
) -> TrainStep:
    """`step(state, x, y, key, idx, w) -> (state, StepStats)`: one optimizer step on the
    batch `x[idx]` with example weights `w` (0 for padding)."""

    def step(
        state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array, idx: jax.Array, w: jax.Array
    ) -> tuple[TrainState, StepStats]:
        xb, yb = x[idx], y[idx]

        def objective(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            out, new_model_state = model.apply(params, state.model_state, xb, train=True, key=key)
            return loss(out, yb, w), (out, new_model_state)

        (value, (out, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        # Σg² as dot products: on CPU ~4% of a small MLP's step faster than optax.tree.norm's
        # reductions (bench/small_jobs.py, digits MLP).
        grad_norm = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads)))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums = {name: jnp.sum(fn(out, yb) * w) for name, fn in metrics.items()}
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
        stats = StepStats(value, jnp.sum(w), sums, grad_norm, finite)
        return TrainState(params, model_state, opt_state), stats

    return step


def run_steps(
    step: TrainStep,
    batching: Batching,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    epoch_key: jax.Array,
    order: jax.Array,
    steps: jax.Array,
    unroll: int = 1,
) -> tuple[TrainState, StepStats]:
    """Steps `steps` (positions within the epoch) in one `lax.scan`; the step's PRNG key
    is `fold_in(epoch_key, step)`, so a step does not depend on how the epoch is cut."""

    def body(carry: TrainState, position: jax.Array) -> tuple[TrainState, StepStats]:
        idx, w = batching.batch(order, position)
        return step(carry, x, y, jax.random.fold_in(epoch_key, position), idx, w)

    return jax.lax.scan(body, state, steps, unroll=unroll)


def make_chunk_fn(
    model: Model,
    loss: LossFn,
    metrics: MetricFns,
    tx: optax.GradientTransformation,
    batching: Batching,
    chunk: int,
    unroll: int = 1,
    jit: Callable[..., Any] = jax.jit,
) -> Callable[..., tuple[TrainState, StepStats]]:
    """Build `run(state, x, y, epoch_key, order, start) -> (state, StepStats[chunk])`: part
    of an epoch too long to run whole in one dispatch.

    Args (of the returned function):
      state: TrainState, donated.
      x, y: the whole training set on the device, [N, ...].
      epoch_key: PRNG key of the epoch; step keys are `fold_in(epoch_key, step)`.
      order: [N] the epoch's example order.
      start: first step of the chunk within the epoch; the chunk must end within the
        epoch (the loop compiles a shorter chunk for an epoch's remainder, rather than
        skipping steps with a conditional, which would cost XLA its in-place updates).

    `jit` compiles it: `jax.jit`, or a data-parallel run's `Placement.jit`.
    """
    step = make_train_step(model, loss, metrics, tx)

    def run(
        state: TrainState,
        x: jax.Array,
        y: jax.Array,
        epoch_key: jax.Array,
        order: jax.Array,
        start: jax.Array,
    ) -> tuple[TrainState, StepStats]:
        positions = start + jnp.arange(chunk)
        return run_steps(step, batching, state, x, y, epoch_key, order, positions, unroll)

    return jit(run, donate_argnums=0)
