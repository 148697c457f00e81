"""Finding and opening datasets by reference, for the jobs API and the workers.

A reference is what a job spec names: `builtin:<name>` or the id of one of the tenant's
uploads. An upload lives, converted once, in `<data_dir>/<Dataset.storage_path>` (x.npy,
y.npy, meta.json), and is opened memory-mapped. No FastAPI here: workers import this.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.db.models import Dataset as DatasetRow
from app.domain.storage import storage_for
from core.data import BUILDERS, Dataset, DatasetInfo, Task, load_builtin, open_converted

BUILTIN_PREFIX = "builtin:"
# Built-ins have no upload time; the epoch marks them as "always there".
BUILTIN_CREATED_AT = datetime(1970, 1, 1, tzinfo=UTC)


class UnknownDatasetError(LookupError):
    """No built-in by that name, and no dataset with that id for that tenant."""

    def __init__(self, ref: str):
        self.ref = ref
        super().__init__(f"no dataset {ref!r}")


def builtin_name(ref: str) -> str | None:
    """`digits` for `builtin:digits` when such a built-in exists, else None."""
    if not ref.startswith(BUILTIN_PREFIX):
        return None
    name = ref.removeprefix(BUILTIN_PREFIX)
    return name if name in BUILDERS else None


def builtin_ref(name: str) -> str:
    return BUILTIN_PREFIX + name


def dataset_row(session: Session, tenant_id: str, dataset_id: str) -> DatasetRow | None:
    """The tenant's uploaded dataset with this id; None if missing or another tenant's."""
    statement = select(DatasetRow).where(
        DatasetRow.id == dataset_id, DatasetRow.tenant_id == tenant_id
    )
    return session.scalars(statement).first()


def info_from_row(row: DatasetRow) -> DatasetInfo:
    """The engine's view of an uploaded dataset, from its row alone (no file access)."""
    return DatasetInfo(
        name=row.name,
        format=row.format,
        task=cast(Task, row.task),
        num_examples=row.num_examples,
        input_shape=tuple(row.input_shape),
        target_shape=tuple(row.target_shape),
        num_classes=row.num_classes,
        class_names=row.class_names,
    )


def dataset_info(session: Session, tenant_id: str, ref: str) -> DatasetInfo | None:
    """Shapes, task and classes of `builtin:<name>` or of the tenant's dataset `ref`.

    Returns:
      the DatasetInfo, or None for an unknown built-in, a missing id or another tenant's.
    """
    name = builtin_name(ref)
    if name is not None:
        return load_builtin(name).info
    if ref.startswith(BUILTIN_PREFIX):
        return None
    row = dataset_row(session, tenant_id, ref)
    return None if row is None else info_from_row(row)


def dataset_directory(settings: Settings, row: DatasetRow) -> Path:
    """A folder on this host with an uploaded dataset's converted arrays: in the data
    directory, or (object storage) this host's cached copy."""
    return storage_for(settings).local_tree(row.storage_path)


def open_dataset(session: Session, settings: Settings, tenant_id: str, ref: str) -> Dataset:
    """The arrays of `builtin:<name>` (shared, read-only) or of the tenant's dataset `ref`.

    Returns:
      Dataset with x float32 [n, *input_shape] and y [n, *target_shape], read-only;
      an upload's arrays are memory-mapped, so opening costs no copy.
    Raises:
      UnknownDatasetError: unknown built-in, missing id, or another tenant's dataset.
    """
    name = builtin_name(ref)
    if name is not None:
        return load_builtin(name)
    row = None if ref.startswith(BUILTIN_PREFIX) else dataset_row(session, tenant_id, ref)
    if row is None:
        raise UnknownDatasetError(ref)
    return open_converted(dataset_directory(settings, row))


@functools.cache
def builtin_fingerprint(name: str) -> tuple[int, str]:
    """(size_bytes, sha256) of a built-in: its arrays' bytes, x then y, in C order.

    Built-ins have no uploaded file, so the arrays stand in for it: the hash changes
    exactly when the data a job trains on changes.
    """
    dataset = load_builtin(name)
    digest = hashlib.sha256()
    size = 0
    for array in (dataset.x, dataset.y):
        data = np.ascontiguousarray(array)
        digest.update(data.data)
        size += data.nbytes
    return size, digest.hexdigest()
