"""Training: the jitted scan loop, checkpoints, stopping rules and worker hooks."""

from core.train.callbacks import Callbacks, MetricPoint, Progress
from core.train.loop import TrainResult, train

__all__ = ["Callbacks", "MetricPoint", "Progress", "TrainResult", "train"]
