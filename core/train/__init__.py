"""Training: the jitted scan loop, checkpoints, stopping rules and worker hooks."""

from core.train.callbacks import (
    Callbacks,
    MetricPoint,
    MetricSeries,
    Phase,
    Progress,
    StopReason,
)
from core.train.checkpoint import latest_checkpoint
from core.train.loop import TrainResult, train

__all__ = [
    "Callbacks",
    "MetricPoint",
    "MetricSeries",
    "Phase",
    "Progress",
    "StopReason",
    "TrainResult",
    "latest_checkpoint",
    "train",
]
