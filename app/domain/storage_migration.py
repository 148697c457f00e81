"""`backprop storage migrate --to URL`: copy a deployment's stored files to another store.

The database names files by keys relative to the store (`datasets/<id>`, `jobs/<id>/…`),
so a move copies the files the rows name, checks each copy's size, and leaves the rows as
they are; the deployment then runs with `BACKPROP_STORAGE_URL` set to the new store.
Files no row names (the compilation cache, the embedded database and broker, leftovers)
are not copied. Run it with the service stopped, or again after a final stop: a copy whose
size already matches is skipped, so a second run copies only what is new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.db.models import Artifact, Dataset, Job
from app.domain.storage import Storage


@dataclass
class MigrationReport:
    copied: int = 0
    skipped: int = 0  # already in the target with the same size
    missing: list[str] = field(default_factory=list)  # named by a row, not in the source
    bytes_copied: int = 0


def referenced_keys(session: Session, source: Storage) -> Iterator[str]:
    """Every file a row names: datasets' folders (expanded), checkpoints and models."""
    for prefix in session.scalars(select(Dataset.storage_path)):
        yield from source.keys(prefix)
    seen: set[str] = set()
    for column in (Artifact.path, Job.model_path, Job.checkpoint_path):
        for key in session.scalars(select(column).where(column.is_not(None))):
            if key is not None and key not in seen:
                seen.add(key)
                yield key


def migrate_storage(
    session: Session,
    source: Storage,
    target: Storage,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> MigrationReport:
    report = MigrationReport()
    for key in referenced_keys(session, source):
        if not source.exists(key):
            report.missing.append(key)
            continue
        local = source.local_path(key)
        size = local.stat().st_size
        if target.size(key) == size:
            report.skipped += 1
            continue
        target.put(local, key)
        if target.size(key) != size:
            raise OSError(f"the copy of {key!r} in {target.url} does not have its {size} bytes")
        report.copied += 1
        report.bytes_copied += size
        progress(key)
    return report
