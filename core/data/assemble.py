"""Turn parsed arrays into a `Dataset` with the dtypes and shapes every loader promises.

Conventions shared by all loaders (and the built-in datasets):
  - x is float32 with at least one feature axis: [num_examples, *input_shape].
  - classification: y is int32 class indices in [0, num_classes), shape [num_examples].
  - regression: y is float32 with at least one target axis, so a y of shape
    [num_examples] becomes [num_examples, 1]. This matches a final Dense(k) layer's
    output directly and avoids silently broadcasting [batch, 1] against [batch].
"""

from __future__ import annotations

import numpy as np

from core.data.dataset import Dataset, DatasetInfo, Task
from core.data.limits import LoadRequest, check_limit
from core.errors import DatasetError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def first_bad_index(bad: np.ndarray) -> tuple[int, ...]:
    """Index (one int per axis) of the first True in a boolean array."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))


def to_float32(values: np.ndarray, *, where: str) -> np.ndarray:
    """Cast real numbers to float32, rejecting NaN, ±inf and values float32 cannot hold.

    Args:
      values: a bool, integer or floating array of any shape.
      where: names the array in error messages (e.g. "x").
    Returns:
      the same values as float32, same shape.
    """
    values = np.asarray(values)
    if values.dtype.kind in "biu":  # every integer fits float32's range
        return values.astype(np.float32)
    bad = ~np.isfinite(values)
    if values.dtype.itemsize > 4:
        # Checked before the cast: casting 1e39 to float32 would warn and give inf.
        bad |= np.abs(values) > FLOAT32_MAX
    if bad.any():
        index = first_bad_index(bad)
        at = f"{where}[{', '.join(map(str, index))}]"
        raise DatasetError(
            f"{at}: {float(values[index])!r} is not a finite float32 number; replace missing or "
            "infinite values (or drop those examples) and upload again",
            where=at,
        )
    return values.astype(np.float32)


def build_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    request: LoadRequest,
    format: str,
    task: Task,
    class_names: list[str] | None = None,
    extra: dict[str, object] | None = None,
) -> Dataset:
    """Assemble the final `Dataset`, enforcing the shape and dtype conventions above.

    Args:
      x: features, [num_examples, *input_shape], any real dtype (cast to float32).
      y: [num_examples] class indices for classification, or
        [num_examples, *target_shape] numbers for regression.
      request: supplies the dataset name and the limits.
      format: the upload format (DatasetInfo.format).
      task: the resolved task.
      class_names: classification only: names in class-index order.
      extra: anything else worth keeping in DatasetInfo.extra (JSON-serialisable).
    Returns:
      the Dataset, with num_classes = len(class_names) for classification.
    """
    num_examples = len(x)
    if num_examples == 0:
        raise DatasetError("the upload holds no examples; add at least one row or image")
    check_limit(num_examples, request.limits.max_rows, what="the number of examples", where="x")
    if x.ndim < 2:
        raise DatasetError(
            f"x has shape {list(x.shape)}; features need shape [num_examples, ...]",
            where="x",
        )
    num_classes = None
    if task == "classification":
        assert class_names is not None, "classification needs class names"
        num_classes = len(class_names)
        y = np.asarray(y, dtype=np.int32)
    else:
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        class_names = None
    info = DatasetInfo(
        name=request.name,
        format=format,
        task=task,
        num_examples=num_examples,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        target_shape=tuple(int(d) for d in y.shape[1:]),
        num_classes=num_classes,
        class_names=class_names,
        extra=dict(extra or {}),
    )
    return Dataset(x=np.asarray(x, dtype=np.float32), y=y, info=info)
