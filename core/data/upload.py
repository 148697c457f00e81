"""The single entry point for uploads: pick a loader by format and enforce the limits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from core.data.csv_loader import load_csv
from core.data.dataset import Dataset, Task
from core.data.image_zip_loader import load_image_zip
from core.data.limits import DEFAULT_LIMITS, Limits, LoadRequest, check_limit
from core.data.npz_loader import load_npz
from core.errors import DatasetError

Loader = Callable[[Path, LoadRequest], Dataset]

# Format name (API.md's `format` field) → loader. A new format is one entry here.
LOADERS: dict[str, Loader] = {
    "csv": load_csv,
    "npz": load_npz,
    "image_zip": load_image_zip,
}

_SUFFIX_FORMATS = {".csv": "csv", ".npz": "npz", ".zip": "image_zip"}


def infer_format(filename: str) -> str:
    """The format implied by a file name's suffix (case-insensitive).

    Raises:
      DatasetError(kind="unsupported_format") for any other suffix.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(f"{s} ({f})" for s, f in _SUFFIX_FORMATS.items())
        raise DatasetError(
            f"cannot tell the format of {filename!r} from its name; name the file {known}, "
            f"or pass format as one of {', '.join(LOADERS)}",
            kind="unsupported_format",
            where="format",
        )
    return _SUFFIX_FORMATS[suffix]


def load_upload(
    path: str | os.PathLike[str],
    *,
    name: str,
    format: str | None = None,
    filename: str | None = None,
    target: str | None = None,
    task: Task | None = None,
    image_size: tuple[int, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Dataset:
    """Parse an uploaded file into a Dataset, or explain what is wrong with it.

    Args:
      path: the uploaded file on disk.
      name: the dataset's name.
      format: "csv", "npz" or "image_zip"; inferred from `filename` (or `path`) when None.
      filename: the name the client gave the file, when `path` is a temporary name.
      target: CSV only: the target column; None means the last column.
      task: "classification" or "regression"; inferred from the targets when None.
      image_size: image_zip only: (height, width); None means the first image's size.
      limits: hard limits on sizes and counts.
    Returns:
      Dataset with x float32 [num_examples, *input_shape] and y int32 [num_examples]
      (classification) or float32 [num_examples, *target_shape] (regression).
    Raises:
      DatasetError: kind "unsupported_format" (415), "too_large" (413) or "invalid"
        (422), with a message naming the row, column, array or member at fault.
    """
    path = Path(path)
    if format is None:
        format = infer_format(filename or path.name)
    if format not in LOADERS:
        raise DatasetError(
            f"unknown format {format!r}; use one of {', '.join(LOADERS)}",
            kind="unsupported_format",
            where="format",
        )
    if task not in (None, "classification", "regression"):
        raise DatasetError(f"unknown task {task!r}; use classification or regression", where="task")
    if target is not None and format != "csv":
        raise DatasetError(f"target applies only to csv uploads, not {format}", where="target")
    if image_size is not None and format != "image_zip":
        raise DatasetError(
            f"image_size applies only to image_zip uploads, not {format}", where="image_size"
        )
    check_limit(path.stat().st_size, limits.max_bytes, what="the file size", where="upload")
    request = LoadRequest(name=name, target=target, task=task, image_size=image_size, limits=limits)
    return LOADERS[format](path, request)
