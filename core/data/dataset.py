"""The in-memory dataset the training engine consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DatasetInfo:
    """What API.md's Dataset body shows, minus the service's bookkeeping (id, times)."""

    name: str
    format: str
    task: Task
    num_examples: int
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    num_classes: int | None = None
    class_names: list[str] | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """Features and targets as numpy arrays (possibly memory-mapped).

    Args:
      x: float32 features, shape [num_examples, *input_shape].
      y: targets, shape [num_examples, *target_shape]; int32 class indices for
        classification (target_shape usually []), float32 for regression.
      info: the dataset's metadata.
    """

    x: np.ndarray
    y: np.ndarray
    info: DatasetInfo

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} examples but y has {len(self.y)}")
