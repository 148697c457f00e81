"""What a run reports: the per-epoch history, its metric points, and non-finite failures."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import TrainingError
from core.train.callbacks import MetricSeries
from core.train.epoch import EpochsOut
from core.train.step import Batching


def raise_if_non_finite(finite: Any, epoch: int, step_before: int) -> None:
    """Raise `non_finite_loss` at the first False of `finite` (per step, from `step_before`)."""
    bad = np.flatnonzero(~np.asarray(finite))
    if bad.size:
        step = step_before + int(bad[0]) + 1
        raise TrainingError(
            "non_finite_loss",
            f"the loss or its gradient became NaN/inf at epoch {epoch}, step {step}; lower the "
            "learning rate, add clip_norm, or check the data for extreme values",
            epoch=epoch,
            step=step,
        )


class History:
    """The run's per-epoch metrics (`rows`, index = epoch) and the points they become."""

    def __init__(self, metric_order: list[str], batching: Batching, log_every_steps: int):
        self.metric_order = metric_order
        self.batching = batching
        self.every = log_every_steps
        self.rows: list[dict[str, float]] = []

    def step_points(self, losses: Any, step_before: int, epoch: Any) -> MetricSeries:
        """Per-step batch losses, every `log_every_steps` steps of the whole run: `losses`
        are steps `step_before + 1, …`; `epoch` is one epoch or one per step."""
        losses = np.ravel(losses)
        steps = step_before + 1 + np.arange(len(losses))
        keep = np.flatnonzero(steps % self.every == 0)
        epochs = np.broadcast_to(epoch, steps.shape)[keep]
        return MetricSeries("loss", steps[keep].tolist(), epochs.tolist(), losses[keep].tolist())

    def add(
        self,
        out: EpochsOut,
        count: int,
        first_epoch: int,
        step_before: int,
        timing: dict[str, float],
        log_steps: bool,
    ) -> tuple[list[MetricSeries], list[dict[str, float]]]:
        """Append the first `count` epochs of `out`; returns their series and rows."""
        per_epoch = self.batching.steps
        columns = {
            name: np.asarray(out.epochs.metrics[name][:count]).tolist()
            for name in self.metric_order
        }
        columns.update({name: [value] * count for name, value in timing.items()})
        names = list(columns)
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        epochs = list(range(first_epoch, first_epoch + count))
        ends = [step_before + (i + 1) * per_epoch for i in range(count)]
        series = []
        if log_steps:
            each_step = np.repeat(np.arange(first_epoch, first_epoch + count), per_epoch)
            series.append(self.step_points(out.step_loss[:count], step_before, each_step))
        for name, values in columns.items():
            # The series "loss" holds the per-step batch losses; the epoch mean is "epoch_loss".
            series.append(
                MetricSeries("epoch_loss" if name == "loss" else name, ends, epochs, values)
            )
        self.rows += rows
        return series, rows
