"""`train(spec, dataset, …) -> TrainResult`: the one entry point the worker calls."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from core.data.dataset import Dataset
from core.errors import FitError, SpecError, TrainingError
from core.fit import fit_check
from core.losses import SUMMED, loss_fn
from core.metrics import metric_fns
from core.model import Model, check_shapes
from core.optimizers import build_optimizer, current_learning_rate
from core.spec import JobSpec
from core.train.callbacks import Callbacks, Progress
from core.train.checkpoint import (
    prune_checkpoints,
    read_checkpoint,
    write_checkpoint_atomically,
)
from core.train.data import epoch_order, split_validation
from core.train.reporting import (
    epoch_points,
    raise_if_non_finite,
    step_points,
    train_metrics,
    validator,
)
from core.train.step import Batching, StepStats, TrainState, make_chunk_fn
from core.train.stopping import EarlyStoppingState, stop_when_reached

TARGET_CHUNK_SECONDS = 1.0  # control returns to Python about this often
# A guess of the device's speed (and of a step's fixed cost) for sizing the first chunks
# from the step's FLOP count; the first timing without compilation corrects it when it is
# more than 4× off. Measured: the 784-1024-1024-10 MLP runs at ~150 GFLOP/s on 2 cores.
ASSUMED_FLOPS_PER_SECOND = 1e11
STEP_OVERHEAD_SECONDS = 2e-5


class StopReason(StrEnum):
    """Why a run ended (the job summary's `stop_reason`)."""

    COMPLETED = "completed"  # every epoch ran
    EARLY_STOPPING = "early_stopping"
    STOP_WHEN = "stop_when"
    CANCELLED = "cancelled"  # the callbacks asked to stop


@dataclass
class TrainResult:
    params: Any
    model_state: Any
    history: list[dict[str, float]]  # per-epoch metrics, index = epoch
    summary: dict[str, float | int | None]
    stop_reason: StopReason
    steps_completed: int


class _Run:
    """The mutable bookkeeping of one call to `train`."""

    def __init__(
        self, spec: JobSpec, train_data: Dataset, checkpoint_dir: Path | None, callbacks: Callbacks
    ):
        self.spec = spec
        self.opts = spec.training
        self.callbacks = callbacks
        self.checkpoint_dir = checkpoint_dir
        self.batching = Batching.for_size(len(train_data.x), self.opts.batch_size)
        self.total_steps = self.batching.steps * self.opts.epochs
        self.history: list[dict[str, float]] = []
        self.early = EarlyStoppingState()
        self.best: Any = None  # (params, model_state) of the best epoch, for restore_best
        self.step = 0
        self.started = time.monotonic()

    @property
    def keeps_best(self) -> bool:
        return bool(self.opts.early_stopping and self.opts.early_stopping.restore_best)

    def progress(self, epoch: int) -> None:
        elapsed = time.monotonic() - self.started
        self.callbacks.on_progress(
            Progress(epoch, self.opts.epochs, self.step, self.total_steps, elapsed)
        )

    def save(self, epochs_done: int, state: TrainState) -> None:
        if self.checkpoint_dir is None:
            return
        trees: dict[str, Any] = {"state": state}
        if self.keeps_best and self.best is not None:
            trees["best"] = self.best
        meta = {
            "epoch": epochs_done,
            "step": self.step,
            "history": self.history,
            "early_stopping": self.early.as_dict(),
            "seed": self.opts.seed,
        }
        path = write_checkpoint_atomically(self.checkpoint_dir, epochs_done, trees, meta)
        prune_checkpoints(self.checkpoint_dir)
        self.callbacks.on_checkpoint(str(path), epochs_done, self.step)

    def restore(self, state: TrainState, path: Path) -> tuple[TrainState, int]:
        """Continue from the checkpoint at `path`; returns (state, first epoch to run)."""
        templates: dict[str, Any] = {"state": state}
        if self.keeps_best:
            templates["best"] = (state.params, state.model_state)
        trees, meta = read_checkpoint(path, templates)
        self.history, self.step = meta["history"], meta["step"]
        self.early = EarlyStoppingState(**meta["early_stopping"])
        self.best = trees.get("best")
        return jax.tree.map(jnp.asarray, trees["state"]), meta["epoch"]

    def result(self, state: TrainState, stop_reason: StopReason) -> TrainResult:
        summary: dict[str, float | int | None] = {}
        if self.history:
            last = self.history[-1]
            summary = dict(last)
        summary["best_epoch"] = self.early.best_epoch
        return TrainResult(
            state.params,
            state.model_state,
            self.history,
            summary,
            stop_reason,
            self.step,
        )


def train(
    spec: JobSpec,
    dataset: Dataset,
    *,
    validation_data: Dataset | None = None,
    callbacks: Callbacks | None = None,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
    init_params: Any = None,
    chunk_steps: int | None = None,
) -> TrainResult:
    """Train `spec`'s model on `dataset` by backpropagation.

    Args:
      spec: a validated JobSpec (`core.spec.parse_spec`).
      dataset: training data; a `validation.split` is held out of it after a seeded shuffle.
      validation_data: the dataset named by `validation.dataset`, resolved by the caller.
      callbacks: progress, metric batches and cancellation (`Callbacks`).
      checkpoint_dir: where checkpoints go.
      resume_from: a checkpoint of an earlier run of the same spec to continue from, e.g.
        `latest_checkpoint(checkpoint_dir)`; the result is bit-identical to an
        uninterrupted run on CPU.
      init_params: parameters to start from (`init_from`); shapes must match the model.
      chunk_steps: steps per dispatch; by default sized so a chunk takes about a second.
        Results do not depend on it.

    Raises:
      SpecError: the model does not fit the data, or `init_params` does not fit the model.
      TrainingError: `non_finite_loss` (with epoch and step) or `timeout`.
    """
    check_shapes(spec, dataset.info)
    train_data, val_data = split_validation(spec, dataset, validation_data)
    run = _Run(spec, train_data, checkpoint_dir, callbacks or Callbacks())
    opts, batching = run.opts, run.batching

    model = Model(spec.model)
    tx = build_optimizer(spec.optimizer, run.total_steps)
    metrics = metric_fns(spec.metrics, spec.loss)
    init_key, data_key = jax.random.split(jax.random.PRNGKey(opts.seed))
    input_shape = tuple(train_data.info.input_shape)
    params, model_state = model.init(init_key, input_shape)
    if init_params is not None:
        params = _checked_init_params(spec, input_shape, init_params, model_state)
    state = TrainState(params, model_state, tx.init(params))
    start_epoch = 0
    if resume_from is not None:
        state, start_epoch = run.restore(state, resume_from)

    x, y = jax.device_put(np.asarray(train_data.x)), jax.device_put(np.asarray(train_data.y))
    loss = loss_fn(spec.loss)
    chunk = chunk_steps or _chunk_for(
        _seconds_per_step_guess(model, loss, tx, state, x, y, batching), batching.steps
    )
    compiled: dict[int, Any] = {}  # chunk length -> its jitted program

    def chunk_fn(length: int) -> Any:
        if length not in compiled:
            compiled[length] = make_chunk_fn(model, loss, metrics, tx, batching, length)
        return compiled[length]

    validate = validator(model, spec, metrics, val_data) if val_data is not None else None
    calibrated = chunk_steps is not None
    summed = spec.loss.type in SUMMED
    stop_reason = StopReason.COMPLETED

    for epoch in range(start_epoch, opts.epochs):
        epoch_key = jax.random.fold_in(data_key, epoch)
        order = epoch_order(epoch_key, batching.num_examples, opts.shuffle)
        epoch_stats: list[StepStats] = []
        epoch_started = time.monotonic()
        train_seconds = 0.0
        position = 0
        while position < batching.steps:
            length = min(chunk, batching.steps - position)
            warm = length in compiled
            chunk_started = time.monotonic()
            run_chunk = chunk_fn(length)
            state, stats = run_chunk(state, x, y, epoch_key, order, jnp.int32(position))
            stats = jax.device_get(stats)
            seconds = time.monotonic() - chunk_started
            raise_if_non_finite(stats, epoch, run.step)
            run.callbacks.on_metrics(step_points(stats, run.step, epoch, opts.log_every_steps))
            train_seconds += seconds
            position += length
            run.step += length
            epoch_stats.append(stats)
            if warm and not calibrated and length == chunk:
                # Size chunks once from a timing without compilation in it.
                calibrated = True
                if not 0.25 <= seconds / TARGET_CHUNK_SECONDS <= 4:
                    chunk = _chunk_for(seconds / length, batching.steps)
            run.progress(epoch)
            if run.callbacks.should_stop():
                return run.result(state, StopReason.CANCELLED)
            if (
                opts.max_runtime_seconds
                and time.monotonic() - run.started > opts.max_runtime_seconds
            ):
                raise TrainingError(
                    "timeout",
                    f"the run exceeded max_runtime_seconds={opts.max_runtime_seconds}",
                    epoch=epoch,
                    step=run.step,
                )

        epoch_metrics = train_metrics(epoch_stats, summed, list(metrics))
        if validate is not None:
            epoch_metrics.update(validate(state))
        epoch_metrics["learning_rate"] = float(current_learning_rate(state.opt_state))
        epoch_metrics["samples_per_second"] = batching.num_examples / max(train_seconds, 1e-9)
        epoch_metrics["epoch_seconds"] = time.monotonic() - epoch_started
        run.history.append(epoch_metrics)
        run.callbacks.on_metrics(epoch_points(epoch_metrics, run.step, epoch))
        run.callbacks.on_epoch_end(epoch, epoch_metrics)

        if opts.early_stopping is not None:
            improved, stop = run.early.update(opts.early_stopping, epoch_metrics, epoch)
            if improved and run.keeps_best:
                run.best = jax.tree.map(jnp.copy, (state.params, state.model_state))
            if stop:
                stop_reason = StopReason.EARLY_STOPPING
        if stop_when_reached(opts.stop_when, epoch_metrics):
            stop_reason = StopReason.STOP_WHEN
        finished = epoch + 1
        if (
            finished == opts.epochs
            or stop_reason != StopReason.COMPLETED
            or finished % opts.checkpoint_every_epochs == 0
        ):
            run.save(finished, state)
        if stop_reason != StopReason.COMPLETED:
            break

    if run.keeps_best and run.best is not None:
        state = state._replace(params=run.best[0], model_state=run.best[1])
    run.progress(len(run.history))
    return run.result(state, stop_reason)


def _chunk_for(seconds_per_step: float, steps_per_epoch: int) -> int:
    """Steps per dispatch for about TARGET_CHUNK_SECONDS: a power of two (so similar jobs
    share compiled programs) or the whole epoch when that is sooner."""
    wanted = max(1, int(TARGET_CHUNK_SECONDS / max(seconds_per_step, 1e-9)))
    return min(steps_per_epoch, 2 ** int(math.log2(wanted)))


def _seconds_per_step_guess(
    model: Model,
    loss: Any,
    tx: Any,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    batching: Batching,
) -> float:
    """A cheap guess from XLA's FLOP count of one step (lowering only, no compilation)."""
    one: Any = make_chunk_fn(model, loss, {}, tx, batching, 1)
    key = jax.random.PRNGKey(0)
    cost = one.lower(
        state, x, y, key, jnp.arange(batching.num_examples), jnp.int32(0)
    ).cost_analysis()
    flops = float((cost or {}).get("flops", 0.0))
    return flops / ASSUMED_FLOPS_PER_SECOND + STEP_OVERHEAD_SECONDS


def _checked_init_params(
    spec: JobSpec, input_shape: tuple[int, ...], given: Any, fresh_state: Any
) -> Any:
    """`given` as device arrays, once they fit the model; `init_from` brings parameters
    only, so the run's state is the fresh one, checked with them."""
    try:
        fit_check(spec, input_shape, given, fresh_state)
    except FitError as exc:
        raise SpecError.at(
            ("init_from", "job"), f"that job's parameters do not fit this model: {exc}"
        ) from None
    return jax.tree.map(jnp.asarray, given)
