"""Hard limits on uploads, and what a loader is asked to do.

Every limit is checked before the work it bounds is done (from file sizes, archive
headers or array headers), so a hostile upload costs little more than reading its
headers. Breaking a limit raises `DatasetError(kind="too_large")`, which the API answers
with 413.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.data.dataset import Task
from core.errors import DatasetError

GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    """Upper bounds a single upload must stay within.

    Defaults suit a small service: an upload of at most 1 GiB that becomes at most
    1 GiB of float32 features.
    """

    max_bytes: int = 1 * GiB  # the uploaded file itself
    max_rows: int = 10_000_000  # examples: CSV data rows, npz length, images
    max_columns: int = 100_000  # CSV columns, header included
    max_members: int = 100_000  # entries in a zip archive (npz or image_zip)
    max_decompressed_bytes: int = 2 * GiB  # sum of an archive's uncompressed sizes
    max_compression_ratio: float = 100.0  # per image_zip member; PNG/JPEG stay near 1
    max_image_pixels: int = 4096 * 4096  # width × height of any one image
    max_elements: int = 256 * 1024 * 1024  # numbers in x (or y): 1 GiB as float32
    max_classes: int = 10_000  # distinct labels; more means the wrong target column


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class LoadRequest:
    """What the uploader asked for, as a loader sees it.

    Args:
      name: the dataset's name (DatasetInfo.name).
      target: CSV only: the target column's name; None means the last column.
      task: overrides task inference when given.
      image_size: image_zip only: (height, width) every image is resized to; None means
        the first image's size.
      limits: the hard limits to enforce.
    """

    name: str
    target: str | None = None
    task: Task | None = None
    image_size: tuple[int, int] | None = None
    limits: Limits = DEFAULT_LIMITS


def check_limit(
    value: int | float,
    limit: int | float,
    *,
    what: str,
    where: str,
    fix: str = "split the data or upload a smaller sample",
) -> None:
    """Raise `too_large` when `value` exceeds `limit`, naming the limit, the place and a fix."""
    if value > limit:
        raise DatasetError(
            f"{where}: {what} is {value:,}, above this service's limit of {limit:,}; {fix}",
            kind="too_large",
            where=where,
        )
