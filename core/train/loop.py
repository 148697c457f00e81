"""`train(spec, dataset, …) -> TrainResult`: the one entry point the worker calls.

The loop reads like flax's `train_and_evaluate`: set the run up, then until the epochs are
done or a rule stops it, plan a chunk (`plan`), run it on the device (`_Run.run_epochs`,
or `_Run.run_long_epoch` in chunks of steps), apply its epochs' results (history, metric
points, callbacks) and checkpoint when one is due.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from core.data.dataset import Dataset
from core.errors import FitError, SpecError, TrainingError
from core.fit import fit_check
from core.losses import SUMMED, loss_fn, per_example_loss
from core.metrics import metric_fns
from core.model import Model, check_shapes
from core.optimizers import build_optimizer
from core.spec import JobSpec
from core.train.callbacks import Callbacks, Phase, Progress, StopReason
from core.train.checkpoint import prune_checkpoints, read_checkpoint, write_checkpoint_atomically
from core.train.data import epoch_order, split_validation
from core.train.epoch import (
    EVAL_BATCH,
    EpochEnd,
    EpochsOut,
    make_epoch_end_fn,
    make_epochs_fn,
    make_evaluate,
)
from core.train.parallel import Placement
from core.train.plan import ChunkPlanner, Epochs, Steps
from core.train.reporting import History, raise_if_non_finite
from core.train.step import Batching, StepStats, TrainState, make_chunk_fn, make_train_step
from core.train.stopping import EarlyState, StopRules

# A guess of the device's speed (and of a step's fixed cost) for sizing the first chunks
# from the step's FLOP count; the first timing without compilation replaces it.
# Measured: the 784-1024-1024-10 MLP runs at ~150 GFLOP/s on 2 cores.
ASSUMED_FLOPS_PER_SECOND = 1e11
STEP_OVERHEAD_SECONDS = 2e-5


@dataclass
class TrainResult:
    params: Any
    model_state: Any
    history: list[dict[str, float]]  # per-epoch metrics, index = epoch
    summary: dict[str, float | int | None]
    stop_reason: StopReason
    steps_completed: int
    devices: int = 1  # the devices the batch was split over (`resources.devices`)


class _StopRequested(Exception):
    """The callbacks asked to stop (raised between chunks, caught by `train`)."""

    def __init__(self, reason: StopReason):
        super().__init__(reason)
        self.reason = reason


class _Run:
    """One call to `train`: the device state, the compiled programs and the bookkeeping."""

    def __init__(
        self,
        spec: JobSpec,
        train_data: Dataset,
        val_data: Dataset | None,
        checkpoint_dir: Path | None,
        callbacks: Callbacks,
        init_params: Any,
        chunk_steps: int | None,
    ):
        self.spec, self.opts = spec, spec.training
        self.callbacks = callbacks
        self.checkpoint_dir = checkpoint_dir
        batching = Batching.for_size(len(train_data.x), self.opts.batch_size)
        self.placement = Placement.for_spec(spec, batching.size)
        self.batching = replace(batching, sharding=self.placement.batch_sharding)
        self.val_batching = self._val_batching(val_data)
        self.total_steps = self.batching.steps * self.opts.epochs

        self.model = Model(spec.model)
        self.loss = loss_fn(spec.loss)
        self.metrics = metric_fns(spec.metrics, spec.loss)
        self.tx = build_optimizer(spec.optimizer, self.total_steps)
        init_key, self.data_key = jax.random.split(jax.random.PRNGKey(self.opts.seed))
        input_shape = tuple(train_data.info.input_shape)
        # One jitted program, not one eager op per initializer (each compiled, or looked up
        # in the compilation cache, on its own: 0.5 s for a 2-layer MLP in a new process).
        params, model_state = jax.jit(self.model.init, static_argnums=1)(init_key, input_shape)
        if init_params is not None:
            params = _checked_init_params(spec, input_shape, init_params, model_state)
        self.state = self.placement.put(TrainState(params, model_state, self.tx.init(params)))
        self.rules = StopRules(self.opts.early_stopping, self.opts.stop_when)
        self.limits = self.rules.limits()
        self.keeps_best = bool(self.opts.early_stopping and self.opts.early_stopping.restore_best)
        self.early = EarlyState.initial()
        self.best: Any = self._copy_of_params() if self.keeps_best else None

        self.x, self.y = _on_device(train_data, self.placement)
        self.val = _on_device(val_data, self.placement) if val_data is not None else None
        jax.block_until_ready((self.x, self.y, self.val))
        callbacks.on_phase(Phase.DATA_ON_DEVICE)
        self.end = EpochEnd(
            summed=spec.loss.type in SUMMED,
            metric_names=tuple(self.metrics),
            evaluate=self._evaluate(),
            val_batching=self.val_batching,
            rules=self.rules,
            keeps_best=self.keeps_best,
        )
        self.programs: dict[Any, Any] = {}  # (kind, size) -> jitted program
        self.compiled: dict[Any, Any] = {}  # key -> its program compiled for this run
        self.planner = ChunkPlanner(
            self.batching.steps,
            self.opts.epochs,
            # A fixed chunk_steps needs no guess; lowering a step costs tens of ms.
            seconds_per_step=1.0 if chunk_steps else self._seconds_per_step_guess(),
            fixed_steps=chunk_steps,
            checkpoint_every_epochs=self.opts.checkpoint_every_epochs,
            pauses=frozenset(callbacks.pause_after_epochs()),
        )
        self.history = History(self.end.metric_order(), self.batching, self.opts.log_every_steps)
        self.epoch = 0
        self.step = 0
        self.stop_reason = StopReason.COMPLETED
        self.started = time.monotonic()
        self.last_checkpoint = self.started
        self.suspending = False  # a suspension was asked for: stop at the epoch boundary

    # -- the loop -----------------------------------------------------------------------

    def train(self) -> TrainResult:
        while self.epoch < self.opts.epochs and self.stop_reason == StopReason.COMPLETED:
            chunk = self.planner.next(self.epoch, 0)
            try:
                if isinstance(chunk, Epochs):
                    self.run_epochs(chunk)
                else:
                    self.run_long_epoch()
            except _StopRequested as stop:
                if stop.reason == StopReason.SUSPENDED:
                    self.save()  # at an epoch boundary: what a later run resumes from
                self.callbacks.on_phase(Phase.TRAINING_DONE)
                return self.result(stop.reason)
            self.checkpoint_if_due()
        self.callbacks.on_phase(Phase.TRAINING_DONE)
        if self.keeps_best and int(self.early.best_epoch) >= 0:
            params, model_state = self.best
            self.state = self.state._replace(params=params, model_state=model_state)
        self.progress()
        return self.result(self.stop_reason)

    def run_epochs(self, chunk: Epochs) -> None:
        """`chunk.count` whole epochs in one dispatch; fewer when one of them stops the run."""
        key = ("epochs", chunk.capacity)
        step = make_train_step(self.model, self.loss, self.metrics, self.tx)
        self.program(
            key,
            make_epochs_fn,
            step,
            self.batching,
            self.end,
            self.opts.shuffle,
            chunk.capacity,
            self.placement.jit,
        )
        seconds, (self.state, self.best, self.early, out) = self.timed(
            key,
            self.state,
            self.best,
            self.early,
            self.x,
            self.y,
            self.val,
            self.data_key,
            jnp.int32(self.epoch),
            jnp.int32(chunk.count),
            self.limits,
        )
        out = jax.device_get(out)
        self.planner.measured(Epochs(int(out.ran), chunk.capacity), seconds)
        self.apply_epochs(out, self.step, seconds, seconds)
        self.between_chunks()

    def run_long_epoch(self) -> None:
        """One epoch in chunks of steps, then its end (validation, rules) as its own program."""
        epoch_key = jax.random.fold_in(self.data_key, self.epoch)
        order = epoch_order(epoch_key, self.batching.num_examples, self.opts.shuffle)
        parts: list[StepStats] = []
        epoch_started = time.monotonic()
        epoch_step = self.step
        train_seconds = 0.0
        position = 0
        while position < self.batching.steps:
            chunk = self.planner.next(self.epoch, position)
            assert isinstance(chunk, Steps)
            key = ("steps", chunk.length)
            self.program(
                key,
                make_chunk_fn,
                self.model,
                self.loss,
                self.metrics,
                self.tx,
                self.batching,
                chunk.length,
                1,
                self.placement.jit,
            )
            seconds, (self.state, stats) = self.timed(
                key, self.state, self.x, self.y, epoch_key, order, jnp.int32(position)
            )
            self.planner.measured(chunk, seconds)
            stats = jax.device_get(stats)
            raise_if_non_finite(stats.finite, self.epoch, self.step)
            self.callbacks.on_metrics([self.history.step_points(stats.loss, self.step, self.epoch)])
            parts.append(stats)
            train_seconds += seconds
            position += chunk.length
            self.step += chunk.length
            if position < self.batching.steps:
                self.between_chunks(mid_epoch=True)
        stats = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
        end = self.program("epoch_end", make_epoch_end_fn, self.end, self.placement.jit)
        result, self.best, self.early = end(
            self.state,
            stats,
            self.best,
            self.early,
            jnp.int32(self.epoch),
            self.val,
            self.limits,
        )
        out = EpochsOut(
            jnp.int32(1),
            jax.tree.map(lambda v: np.asarray(v)[None], jax.device_get(result)),
            stats.loss[None],
            stats.finite[None],
        )
        seconds = time.monotonic() - epoch_started
        self.apply_epochs(out, epoch_step, train_seconds, seconds, log_steps=False)
        self.between_chunks()

    def apply_epochs(
        self,
        out: EpochsOut,
        step_before: int,
        train_seconds: float,
        seconds: float,
        log_steps: bool = True,
    ) -> None:
        """Record the epochs a chunk ran, from step `step_before` on: history, metric
        points, callbacks, the stop reason; raise at the first non-finite epoch."""
        count = int(out.ran)
        finite = np.asarray(out.epochs.finite[:count])
        good = count if finite.all() else int(np.argmin(finite))
        timing = {
            "samples_per_second": self.batching.num_examples * count / max(train_seconds, 1e-9),
            "epoch_seconds": seconds / count,
        }
        points, rows = self.history.add(out, good, self.epoch, step_before, timing, log_steps)
        self.callbacks.on_metrics(points)
        for offset, row in enumerate(rows):
            self.callbacks.on_epoch_end(self.epoch + offset, row)
        self.epoch += good
        self.step = step_before + good * self.batching.steps
        if good < count:  # the epoch after the good ones went non-finite
            raise_if_non_finite(out.step_finite[good], self.epoch, self.step)
        last = out.epochs.decision
        if last.early_stop[count - 1]:
            self.stop_reason = StopReason.EARLY_STOPPING
        if last.reached[count - 1]:
            self.stop_reason = StopReason.STOP_WHEN

    def between_chunks(self, mid_epoch: bool = False) -> None:
        """Progress, cancellation and the runtime limit, checked after every dispatch.

        A suspension waits for the epoch boundary (checkpoints hold whole epochs), and
        gives way to a run that ends here anyway (its last epoch, a stop rule fired).
        """
        self.progress()
        if requested := self.callbacks.should_stop():
            reason = requested if isinstance(requested, StopReason) else StopReason.CANCELLED
            if reason != StopReason.SUSPENDED:
                raise _StopRequested(reason)
            self.suspending = True
        ending = self.epoch >= self.opts.epochs or self.stop_reason != StopReason.COMPLETED
        if self.suspending and not mid_epoch and not ending:
            raise _StopRequested(StopReason.SUSPENDED)
        limit = self.opts.max_runtime_seconds
        if limit and time.monotonic() - self.started > limit:
            raise TrainingError(
                "timeout",
                f"the run exceeded max_runtime_seconds={limit}",
                epoch=self.epoch,
                step=self.step,
            )

    def checkpoint_if_due(self) -> None:
        """At an epoch boundary: at the end, at a stop, every `checkpoint_every_epochs`, and
        at the first boundary `checkpoint_every_seconds` after the previous checkpoint."""
        every_epochs = self.opts.checkpoint_every_epochs
        if (
            self.epoch == self.opts.epochs
            or self.stop_reason != StopReason.COMPLETED
            or (every_epochs and self.epoch % every_epochs == 0)
            or time.monotonic() - self.last_checkpoint >= self.opts.checkpoint_every_seconds
        ):
            self.save()

    # -- helpers ------------------------------------------------------------------------

    def program(self, key: Any, build: Any, *args: Any) -> Any:
        """The jitted program `key`, built by `build(*args)` the first time it is asked for."""
        if key not in self.programs:
            self.programs[key] = build(*args)
        return self.programs[key]

    def timed(self, key: Any, *args: Any) -> tuple[float, Any]:
        """Run program `key` on `args` and wait for its results; compiled ahead of the
        first run, so the seconds returned never include compilation."""
        args = self.placement.put(args)  # a compiled program takes its inputs' placement
        if key not in self.compiled:
            self.compiled[key] = self.programs[key].lower(*args).compile()
            if len(self.compiled) == 1:
                self.callbacks.on_phase(Phase.PROGRAM_READY)
        started = time.monotonic()
        results = jax.block_until_ready(self.compiled[key](*args))
        return time.monotonic() - started, results

    def progress(self) -> None:
        elapsed = time.monotonic() - self.started
        self.callbacks.on_progress(
            Progress(self.epoch, self.opts.epochs, self.step, self.total_steps, elapsed)
        )

    def save(self) -> None:
        self.last_checkpoint = time.monotonic()
        if self.checkpoint_dir is None:
            return
        trees: dict[str, Any] = {"state": self.state}
        if self.keeps_best and int(self.early.best_epoch) >= 0:
            trees["best"] = self.best
        meta = {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history.rows,
            "early_stopping": self.early.as_meta(),
            "seed": self.opts.seed,
        }
        path = write_checkpoint_atomically(self.checkpoint_dir, self.epoch, trees, meta)
        prune_checkpoints(self.checkpoint_dir, path)
        self.callbacks.on_checkpoint(str(path), self.epoch, self.step)

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at `path`."""
        templates: dict[str, Any] = {"state": self.state}
        if self.keeps_best:
            templates["best"] = self.best
        trees, meta = read_checkpoint(path, templates)
        self.history.rows = meta["history"]
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.early = EarlyState.from_meta(meta["early_stopping"])
        # Checkpoints hold host arrays, whatever the devices of the run that wrote them.
        self.state = self.placement.put(jax.tree.map(jnp.asarray, trees["state"]))
        if "best" in trees:
            self.best = self.placement.put(jax.tree.map(jnp.asarray, trees["best"]))

    def result(self, stop_reason: StopReason) -> TrainResult:
        rows = self.history.rows
        summary: dict[str, float | int | None] = dict(rows[-1]) if rows else {}
        best_epoch = int(self.early.best_epoch)
        summary["best_epoch"] = best_epoch if best_epoch >= 0 else None
        return TrainResult(
            self.state.params,
            self.state.model_state,
            rows,
            summary,
            stop_reason,
            self.step,
            self.placement.devices,
        )

    def _copy_of_params(self) -> Any:
        # A copy, not an alias: the programs donate both the state and the best parameters.
        return jax.tree.map(jnp.copy, (self.state.params, self.state.model_state))

    def _val_batching(self, val_data: Dataset | None) -> Batching | None:
        """Batches of the validation set: `EVAL_BATCH`, rounded up to a multiple of the
        devices when they split it (weight-0 padding)."""
        if val_data is None:
            return None
        batching = Batching.for_size(len(val_data.x), EVAL_BATCH)
        if self.placement.mesh is None:
            return batching
        size = self.placement.eval_batch(batching.size)
        return Batching(batching.num_examples, size, self.placement.batch_sharding)

    def _evaluate(self) -> Any:
        if self.val_batching is None:
            return None
        loss = per_example_loss(self.spec.loss)
        return make_evaluate(self.model, loss, self.metrics, self.val_batching)

    def _seconds_per_step_guess(self) -> float:
        """A cheap guess from XLA's FLOP count of one step (lowering only, no compilation)."""
        one: Any = make_chunk_fn(
            self.model, self.loss, {}, self.tx, self.batching, 1, 1, self.placement.jit
        )
        cost = one.lower(
            self.state,
            self.x,
            self.y,
            jax.random.PRNGKey(0),
            jnp.arange(self.batching.num_examples),
            jnp.int32(0),
        ).cost_analysis()
        flops = float((cost or {}).get("flops", 0.0))
        return flops / ASSUMED_FLOPS_PER_SECOND + STEP_OVERHEAD_SECONDS


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
      chunk_steps: steps per dispatch (whole epochs when it is at least an epoch); by
        default sized so a dispatch takes about half a second. Results do not depend on it.

    With `resources.devices` N > 1 the batch is split over N local devices
    (`core.train.parallel`); results equal one device's up to float reassociation.

    Raises:
      SpecError: the model does not fit the data, or `init_params` does not fit the model,
        or `resources.devices` asks for more devices than this process has or for a
        number that does not split the batch.
      TrainingError: `non_finite_loss` (with epoch and step) or `timeout`.
    """
    check_shapes(spec, dataset.info)
    train_data, val_data = split_validation(spec, dataset, validation_data)
    run = _Run(
        spec,
        train_data,
        val_data,
        checkpoint_dir,
        callbacks or Callbacks(),
        init_params,
        chunk_steps,
    )
    if resume_from is not None:
        run.restore(resume_from)
    return run.train()


def _on_device(data: Dataset, placement: Placement) -> tuple[jax.Array, jax.Array]:
    """The data set on the device; over a mesh, a copy on each device (a batch's indices
    are random, so each device gathers its slice from the whole set)."""
    if placement.mesh is not None:
        return placement.put((np.asarray(data.x), np.asarray(data.y)))
    return jax.device_put(np.asarray(data.x)), jax.device_put(np.asarray(data.y))


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
