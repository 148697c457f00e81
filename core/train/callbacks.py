"""How the worker watches and steers a run: progress, metric batches, stop requests."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class StopReason(StrEnum):
    """Why a run ended (the job summary's `stop_reason`)."""

    COMPLETED = "completed"  # every epoch ran
    EARLY_STOPPING = "early_stopping"
    STOP_WHEN = "stop_when"
    CANCELLED = "cancelled"  # the callbacks asked to stop
    PRUNED = "pruned"  # the callbacks asked to stop for a search (a sweep's early termination)
    # The callbacks asked to pause, to be resumed later: the run goes on to its next epoch
    # boundary, writes a checkpoint there and stops (a worker shutting down).
    SUSPENDED = "suspended"


class Phase(StrEnum):
    """Moments of a run the worker times (the job's `timings`)."""

    DATA_ON_DEVICE = "data_on_device"  # the training (and validation) arrays are on the device
    PROGRAM_READY = "program_ready"  # the first program is compiled (or read from the cache)
    TRAINING_DONE = "training_done"  # the last step has run


@dataclass(frozen=True)
class Progress:
    epoch: int  # 0-based epoch in progress (== epochs when finished)
    epochs: int
    step: int  # optimizer steps done in the whole run
    steps: int  # steps the whole run will take if it is not stopped early
    elapsed_seconds: float

    @property
    def fraction(self) -> float:
        return min(self.step / self.steps, 1.0) if self.steps else 1.0

    @property
    def eta_seconds(self) -> float | None:
        if self.step == 0 or self.elapsed_seconds <= 0:
            return None
        return (self.steps - self.step) * self.elapsed_seconds / self.step


class MetricPoint(NamedTuple):
    name: str
    step: int
    epoch: int
    value: float


@dataclass(frozen=True)
class MetricSeries:
    """Points of one metric, as columns: `values[i]` after step `steps[i]`, in epoch
    `epochs[i]`. A chunk of many tiny epochs reports 10⁵ points; columns keep that cheap."""

    name: str
    steps: list[int]
    epochs: list[int]
    values: list[float]

    def points(self) -> Iterator[MetricPoint]:
        for step, epoch, value in zip(self.steps, self.epochs, self.values, strict=True):
            yield MetricPoint(self.name, step, epoch, value)


class Callbacks:
    """No-op hooks; the worker subclasses this. Hooks run between scan chunks (~1 s)."""

    def on_progress(self, progress: Progress) -> None:
        """Called after each chunk of steps."""

    def on_metrics(self, series: list[MetricSeries]) -> None:
        """The metric points of a chunk: per-step loss, and the metrics of the epochs it ended."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """All metrics of a finished epoch (0-based), after validation."""

    def on_checkpoint(self, path: str, epoch: int, step: int) -> None:
        """A checkpoint is durable on disk (the worker records it only now)."""

    def on_phase(self, phase: Phase) -> None:
        """The run reached `phase` (each at most once; none after an error)."""

    def pause_after_epochs(self) -> Collection[int]:
        """Epoch counts after which a chunk of many epochs ends, so that these hooks see the
        run there (a search judging a trial at fixed epochs); asked once, at the start."""
        return ()

    def should_stop(self) -> bool | StopReason:
        """Return True (a cancellation) or the reason, CANCELLED or PRUNED, to stop cleanly
        at the next chunk boundary; the run's result keeps the parameters it has then.
        SUSPENDED stops at the next epoch boundary instead, after a checkpoint there."""
        return False
