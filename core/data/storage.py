"""Converted datasets on disk: `x.npy`, `y.npy` and `meta.json` in one directory.

Uploads are parsed once, at upload time; workers open the converted form, memory-mapped,
and never parse CSV, zip or npz again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.data.dataset import Dataset, DatasetInfo
from core.files import flush_to_disk, fsync_directory

META_VERSION = 1
_X, _Y, _META = "x.npy", "y.npy", "meta.json"


def info_to_json(info: DatasetInfo) -> dict[str, object]:
    """DatasetInfo as plain JSON values (shapes become lists)."""
    return {
        "name": info.name,
        "format": info.format,
        "task": info.task,
        "num_examples": info.num_examples,
        "input_shape": list(info.input_shape),
        "target_shape": list(info.target_shape),
        "num_classes": info.num_classes,
        "class_names": info.class_names,
        "extra": info.extra,
    }


def info_from_json(data: dict[str, Any]) -> DatasetInfo:
    """The inverse of `info_to_json`."""
    return DatasetInfo(
        name=str(data["name"]),
        format=str(data["format"]),
        task=data["task"],
        num_examples=int(data["num_examples"]),
        input_shape=tuple(data["input_shape"]),
        target_shape=tuple(data["target_shape"]),
        num_classes=data["num_classes"],
        class_names=data["class_names"],
        extra=dict(data["extra"]),
    )


def save_converted(dataset: Dataset, directory: str | os.PathLike[str]) -> Path:
    """Write a dataset atomically: all three files appear at once, or none do.

    The files are written into a temporary sibling directory, fsynced, and the directory
    is renamed into place, so a crash never leaves a half-written dataset behind.

    Args:
      dataset: x [n, *input_shape] and y [n, *target_shape], any array-likes numpy saves.
      directory: where the dataset should live; must not exist yet.
    Returns:
      the directory.
    Raises:
      FileExistsError: if `directory` already exists (datasets are immutable; with
        content-addressed directories an existing one already holds the same data).
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for filename, array in ((_X, dataset.x), (_Y, dataset.y)):
            with open(staging / filename, "wb") as file:
                np.save(file, np.ascontiguousarray(array), allow_pickle=False)
                flush_to_disk(file)
        meta = {"version": META_VERSION, "info": info_to_json(dataset.info)}
        with open(staging / _META, "w", encoding="utf-8") as file:
            json.dump(meta, file, indent=2)
            flush_to_disk(file)
        fsync_directory(staging)
        os.rename(staging, directory)  # atomic; fails if directory appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(directory.parent)  # make the rename itself durable
    return directory


def open_converted(directory: str | os.PathLike[str]) -> Dataset:
    """Open a dataset written by `save_converted`, memory-mapping x and y read-only.

    Returns:
      Dataset whose x [n, *input_shape] and y [n, *target_shape] are read-only memmaps.
    Raises:
      ValueError: if the arrays do not match meta.json (a damaged data directory).
    """
    directory = Path(directory)
    meta = json.loads((directory / _META).read_text(encoding="utf-8"))
    if meta.get("version") != META_VERSION:
        raise ValueError(f"{directory / _META}: unsupported version {meta.get('version')!r}")
    info = info_from_json(meta["info"])
    x = np.load(directory / _X, mmap_mode="r", allow_pickle=False)
    y = np.load(directory / _Y, mmap_mode="r", allow_pickle=False)
    expected = (
        (info.num_examples, *info.input_shape),
        (info.num_examples, *info.target_shape),
    )
    if (x.shape, y.shape) != expected:
        raise ValueError(
            f"{directory}: arrays have shapes {x.shape}, {y.shape} but meta.json says "
            f"{expected[0]}, {expected[1]}"
        )
    return Dataset(x=x, y=y, info=info)
