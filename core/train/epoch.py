"""The end of an epoch on the device, and the program that trains many epochs per dispatch.

An epoch ends with the same function wherever it ran: `EpochEnd` reduces the epoch's
per-step stats to its metrics, validates on the device-resident validation set, reads the
learning rate and applies the stop rules. When an epoch is short, `make_epochs_fn` runs up
to `capacity` whole epochs in one `lax.while_loop` (each epoch's order made inside from
`fold_in(key, epoch)`) and leaves the loop right after the epoch at which a rule fires or a
step goes non-finite, so a run stops at the same epoch, with the same state, as if control
had come back after every epoch. A long epoch runs as chunks of steps
(`step.make_chunk_fn`) and then `make_epoch_end_fn`: the same reduction, jitted alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from core.model import Model
from core.optimizers import current_learning_rate
from core.train.data import epoch_order
from core.train.step import Batching, MetricFns, StepStats, TrainState, TrainStep, run_steps
from core.train.stopping import Decision, EarlyState, StopRules

EVAL_BATCH = 512

Evaluate = Callable[[Any, Any, jax.Array, jax.Array, jax.Array], dict[str, jax.Array]]


class EpochResult(NamedTuple):
    """One epoch's outcome; in `EpochsOut` each field has a leading [capacity] axis."""

    metrics: dict[str, jax.Array]  # float32, in the order the history lists them
    decision: Decision
    finite: jax.Array  # bool: every step's loss and gradient norm was finite


class EpochsOut(NamedTuple):
    ran: jax.Array  # epochs run: the requested number, or fewer after a stop
    epochs: EpochResult  # [capacity] (rows past `ran` are zeros)
    step_loss: jax.Array  # [capacity, steps per epoch]
    step_finite: jax.Array  # [capacity, steps per epoch]


@dataclass(frozen=True, eq=False)  # hashed by identity: jax.jit takes it as the function
class EpochEnd:
    """Everything an epoch's end computes, as a pure function of device values."""

    summed: bool  # the loss is a sum over the batch (sse), not a mean
    metric_names: tuple[str, ...]
    evaluate: Evaluate | None  # batch sums on the validation set, None without validation
    val_batching: Batching | None
    rules: StopRules
    keeps_best: bool  # restore_best: keep the parameters of the best epoch

    def __call__(
        self,
        state: TrainState,
        stats: StepStats,
        best: Any,
        early: EarlyState,
        epoch: jax.Array,
        val: tuple[jax.Array, jax.Array] | None,
        limits: dict[str, jax.Array],
    ) -> tuple[EpochResult, Any, EarlyState]:
        metrics = self.train_metrics(stats)
        if val is not None:
            metrics.update(self.validate_apart(state, epoch, *val))
        metrics["learning_rate"] = current_learning_rate(state.opt_state).astype(jnp.float32)
        decision, early = self.rules.decide(metrics, early, epoch, limits)
        if self.keeps_best:
            kept = (state.params, state.model_state)
            best = jax.tree.map(lambda new, old: jnp.where(decision.improved, new, old), kept, best)
        return EpochResult(metrics, decision, jnp.all(stats.finite)), best, early

    def metric_order(self) -> list[str]:
        """The metrics' names in the order the history lists them."""
        names = ["loss", *self.metric_names]
        validation = [f"val_{name}" for name in names] if self.evaluate is not None else []
        return [*names, "grad_norm", *validation, "learning_rate"]

    def train_metrics(self, stats: StepStats) -> dict[str, jax.Array]:
        total = jnp.sum(stats.weight)
        loss = jnp.sum(stats.loss) if self.summed else jnp.sum(stats.loss * stats.weight) / total
        out = {"loss": loss}
        for name in self.metric_names:
            out[name] = jnp.sum(stats.metric_sums[name]) / total
        out["grad_norm"] = jnp.mean(stats.grad_norm)
        return out

    def validate_apart(
        self, state: TrainState, epoch: jax.Array, x: jax.Array, y: jax.Array
    ) -> dict[str, jax.Array]:
        """`validate` as the branch of a conditional whose (traced) predicate always holds.

        XLA compiles a branch as a computation of its own, so the validation pass compiles
        the same inside the many-epochs loop as in a long epoch's separate end; fused into
        the loop instead, its metrics differed from the long epoch's in the last bit.
        """
        shapes = jax.eval_shape(self.validate, state, x, y)

        def skipped() -> dict[str, jax.Array]:
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        return jax.lax.cond(epoch >= 0, lambda: self.validate(state, x, y), skipped)

    def validate(self, state: TrainState, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        assert self.evaluate is not None and self.val_batching is not None
        evaluate = self.evaluate
        params, model_state = state.params, state.model_state

        def batch(_: None, step: jax.Array) -> tuple[None, dict[str, jax.Array]]:
            return None, evaluate(params, model_state, x, y, step)

        _, sums = jax.lax.scan(batch, None, jnp.arange(self.val_batching.steps))
        sums = {name: jnp.sum(values) for name, values in sums.items()}
        total, loss = sums.pop("weight"), sums.pop("loss")
        out = {"val_loss": loss if self.summed else loss / total}
        out.update({f"val_{name}": value / total for name, value in sums.items()})
        return out


def make_evaluate(
    model: Model,
    loss_per_example: Callable[[jax.Array, jax.Array], jax.Array],
    metrics: MetricFns,
    batching: Batching,
) -> Evaluate:
    """`evaluate(params, model_state, x, y, step) -> {"loss": Σ, name: Σ, "weight": Σ}`
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

    return evaluate


def make_epoch_end_fn(
    end: EpochEnd, jit: Callable[..., Any] = jax.jit
) -> Callable[..., tuple[EpochResult, Any, EarlyState]]:
    """`end(state, stats, best, early, epoch, val, limits)` jitted (by `jit`, e.g. a
    data-parallel `Placement.jit`): a long epoch's end."""
    return jit(end)


def make_epochs_fn(
    step: TrainStep,
    batching: Batching,
    end: EpochEnd,
    shuffle: bool,
    capacity: int,
    jit: Callable[..., Any] = jax.jit,
) -> Callable[..., tuple[TrainState, Any, EarlyState, EpochsOut]]:
    """Build `run(state, best, early, x, y, val, data_key, first, count, limits)`: train
    epochs `first, first + 1, …` until `count` (traced, ≤ `capacity`) have run or the
    epoch just run stopped the run; returns the new state, best, early-stopping state and
    the epochs' results. `state` and `best` are donated; `jit` compiles it (`jax.jit`, or a
    data-parallel run's `Placement.jit`)."""
    steps = batching.steps

    def run(
        state: TrainState,
        best: Any,
        early: EarlyState,
        x: jax.Array,
        y: jax.Array,
        val: tuple[jax.Array, jax.Array] | None,
        data_key: jax.Array,
        first: jax.Array,
        count: jax.Array,
        limits: dict[str, jax.Array],
    ) -> tuple[TrainState, Any, EarlyState, EpochsOut]:
        def one_epoch(i: jax.Array, state: TrainState, best: Any, early: EarlyState) -> Any:
            epoch = first + i
            epoch_key = jax.random.fold_in(data_key, epoch)
            order = epoch_order(epoch_key, batching.num_examples, shuffle)
            state, stats = run_steps(
                step, batching, state, x, y, epoch_key, order, jnp.arange(steps)
            )
            result, best, early = end(state, stats, best, early, epoch, val, limits)
            return state, best, early, result, stats

        # Shapes of one epoch's outputs, for the [capacity] buffers the loop writes into.
        shapes = jax.eval_shape(one_epoch, jnp.int32(0), state, best, early)
        result_shape, stats_shape = shapes[3], shapes[4]
        zeros = jax.tree.map(lambda s: jnp.zeros((capacity, *s.shape), s.dtype), result_shape)
        out = EpochsOut(
            jnp.int32(0),
            zeros,
            jnp.zeros((capacity, steps), stats_shape.loss.dtype),
            jnp.zeros((capacity, steps), jnp.bool_),
        )

        def going(carry: Any) -> jax.Array:
            _, _, _, out, stopped = carry
            return (out.ran < count) & ~stopped

        def body(carry: Any) -> Any:
            state, best, early, out, _ = carry
            i = out.ran
            state, best, early, result, stats = one_epoch(i, state, best, early)
            out = EpochsOut(
                i + 1,
                jax.tree.map(lambda buf, v: buf.at[i].set(v), out.epochs, result),
                out.step_loss.at[i].set(stats.loss),
                out.step_finite.at[i].set(stats.finite),
            )
            decision = result.decision
            stopped = decision.early_stop | decision.reached | ~result.finite
            return state, best, early, out, stopped

        state, best, early, out, _ = jax.lax.while_loop(
            going, body, (state, best, early, out, jnp.bool_(False))
        )
        return state, best, early, out

    return jit(run, donate_argnums=(0, 1))
