"""A job's files on the worker's side: where the engine writes them on this host, and how
they become stored keys (app.domain.storage) that the database records.

With the data directory as the store, the engine writes each file at its key's own path,
so storing it is nothing more. With an object store, the engine writes to this host's
scratch folder, and each file is uploaded under a key no earlier write used before the
database records it; the scratch folder goes when the job's run ends.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from app.config import Settings
from app.domain.storage import StorageError, job_prefix, storage_for, unique_name

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2  # as the engine keeps on disk: the newest two


class JobFiles:
    def __init__(self, settings: Settings, job_id: str):
        self.store = storage_for(settings)
        self.prefix = job_prefix(job_id)

    @property
    def checkpoint_dir(self) -> Path:
        """Where the engine writes (and prunes) this run's checkpoints."""
        return self.store.scratch(f"{self.prefix}/{CHECKPOINTS}")

    @property
    def model_file(self) -> Path:
        """Where the runner writes the exported model."""
        return self.store.scratch(f"{self.prefix}/{MODEL_FILE}")

    def store_file(self, local: Path) -> str:
        """Store `local` (one of this job's files, written on this host); returns its key."""
        relative = local.relative_to(self.store.scratch(self.prefix)).as_posix()
        key = f"{self.prefix}/{relative}"
        if self.store.in_place:
            return key
        name = PurePosixPath(key)
        key = str(name.with_name(unique_name(name.stem, name.suffix)))
        self.store.put(local, key)
        return key

    def local(self, key: str) -> Path | None:
        """A path on this host to read a recorded file from; None when it is gone."""
        try:
            return self.store.local_path(key)
        except StorageError as exc:
            log.warning("stored file %s cannot be read: %s", key, exc)
            return None

    def obsolete_checkpoints(
        self, recorded: Sequence[tuple[str, int | None, str]], current: str
    ) -> list[str]:
        """Of the recorded checkpoints `(row id, epoch, key)`, the rows to forget now that
        the row `current` was added: those whose file the engine pruned (data directory);
        with an object store, as the engine prunes, those of later epochs than the current
        one (an abandoned attempt's) and all but the newest `KEEP_CHECKPOINTS` of the rest
        (the caller deletes their objects after commit). Never `current` itself."""
        if self.store.in_place:
            return [
                row_id
                for row_id, _, key in recorded
                if row_id != current and not self.store.exists(key)
            ]
        epoch = next(epoch or 0 for row_id, epoch, _ in recorded if row_id == current)
        stale = [row_id for row_id, other, _ in recorded if (other or 0) > epoch]
        kept = sorted(
            (row for row in recorded if (row[1] or 0) <= epoch and row[0] != current),
            key=lambda row: row[1] or 0,
            reverse=True,
        )
        return stale + [row_id for row_id, _, _ in kept[KEEP_CHECKPOINTS - 1 :]]

    def delete(self, keys: Sequence[str]) -> None:
        """Best effort, after the rows that named `keys` are gone: leftovers only waste space."""
        if self.store.in_place:
            return  # the engine pruned them itself
        for key in keys:
            try:
                self.store.delete(key)
            except OSError:
                log.warning("could not delete %s from %s", key, self.store.url, exc_info=True)

    def clean_scratch(self) -> None:
        """After a run: this host's working copies (object store only; the data directory's
        files are the stored ones)."""
        if not self.store.in_place:
            shutil.rmtree(self.store.scratch(self.prefix), ignore_errors=True)
