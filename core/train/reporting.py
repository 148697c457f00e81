"""What a run reports: per-step and per-epoch metric points, epoch means, validation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from core.data.dataset import Dataset
from core.errors import TrainingError
from core.losses import SUMMED, per_example_loss
from core.model import Model
from core.spec import JobSpec
from core.train.callbacks import MetricPoint
from core.train.step import Batching, StepStats, TrainState, make_eval_fn

EVAL_BATCH = 512


def raise_if_non_finite(stats: StepStats, epoch: int, step_before: int) -> None:
    bad = np.flatnonzero(~np.asarray(stats.finite))
    if bad.size:
        step = step_before + int(bad[0]) + 1
        raise TrainingError(
            "non_finite_loss",
            f"the loss or its gradient became NaN/inf at epoch {epoch}, step {step}; lower the "
            "learning rate, add clip_norm, or check the data for extreme values",
            epoch=epoch,
            step=step,
        )


def step_points(stats: StepStats, step_before: int, epoch: int, every: int) -> list[MetricPoint]:
    steps = step_before + 1 + np.arange(len(stats.loss))
    keep = np.flatnonzero(steps % every == 0)
    return [MetricPoint("loss", int(steps[i]), epoch, float(stats.loss[i])) for i in keep]


def epoch_points(metrics: dict[str, float], step: int, epoch: int) -> list[MetricPoint]:
    # The series "loss" holds the per-step batch losses; the epoch's mean is "epoch_loss".
    return [
        MetricPoint("epoch_loss" if name == "loss" else name, step, epoch, value)
        for name, value in metrics.items()
    ]


def train_metrics(stats: list[StepStats], summed: bool, names: list[str]) -> dict[str, float]:
    loss = np.concatenate([s.loss for s in stats]).astype(np.float64)
    weight = np.concatenate([s.weight for s in stats]).astype(np.float64)
    total = weight.sum()
    out = {"loss": float(loss.sum() if summed else (loss * weight).sum() / total)}
    for name in names:
        out[name] = float(sum(float(s.metric_sums[name].sum()) for s in stats) / total)
    out["grad_norm"] = float(np.concatenate([s.grad_norm for s in stats]).mean())
    return out


def validator(model: Model, spec: JobSpec, metrics: Any, data: Dataset) -> Any:
    """`validate(state) -> {"val_loss": …, "val_<metric>": …}` over the whole set, compiled once."""
    batching = Batching.for_size(len(data.x), EVAL_BATCH)
    evaluate = make_eval_fn(model, per_example_loss(spec.loss), metrics, batching)
    x, y = jax.device_put(np.asarray(data.x)), jax.device_put(np.asarray(data.y))
    summed = spec.loss.type in SUMMED

    def validate(state: TrainState) -> dict[str, float]:
        sums: dict[str, float] = {}
        for step in range(batching.steps):
            batch = jax.device_get(evaluate(state.params, state.model_state, x, y, jnp.int32(step)))
            for name, value in batch.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        total = sums.pop("weight")
        loss_total = sums.pop("loss")
        out = {"val_loss": loss_total if summed else loss_total / total}
        out.update({f"val_{name}": value / total for name, value in sums.items()})
        return out

    return validate
