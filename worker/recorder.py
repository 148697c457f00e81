"""`JobRecorder`: the training loop's callbacks, written to the database in batches.

Metric points are buffered and written together with the progress in one transaction
about once a second (checked after every chunk and at every epoch end), at each
checkpoint and at the end, never a round trip per step or per tiny epoch. Points are
upserted on (job_id, name, step), so a resumed attempt that rewrites steps after its
checkpoint replaces rows instead of duplicating them. A checkpoint is recorded (artifact
row, `checkpoint_path`/`checkpoint_epoch`) only once `on_checkpoint` says it is durable.
Every write is conditional on still owning the job; once it is not, the recorder asks the
loop to stop and writes nothing more. Once `suspend` is set (the training process was asked
to stop: its worker is shutting down), it asks the loop to suspend, which checkpoints at
the next epoch boundary and stops.

While the database is down or restarting, training goes on and the buffer (points,
progress, the newest durable checkpoint) waits for the next flush; the last flush of a
run is retried for up to `retry_seconds`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.domain.db.engine import transaction
from app.domain.db.models import Artifact, Job, Metric
from app.domain.db.types import utcnow
from app.domain.leases import owned, update_owned_job
from app.domain.status import ArtifactKind
from app.domain.storage import StorageError
from app.domain.sweeps.judge import TrialJudge
from app.domain.timings import Timeline
from app.domain.values import JobProgress
from core.train import Callbacks, MetricSeries, Phase, Progress, StopReason
from worker.db import retry_while_unavailable, upsert
from worker.stored_files import JobFiles

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0  # metric and progress writes, at most this often within an epoch
CANCEL_CHECK_SECONDS = 0.5  # cancel_requested is read at most this often


class JobRecorder(Callbacks):
    def __init__(
        self,
        factory: sessionmaker[Session],
        job_id: str,
        *,
        worker: str,
        attempt: int,
        files: JobFiles,
        clock: Callable[[], float] = time.monotonic,
        suspend: threading.Event | None = None,
        retry_seconds: float = 60.0,
    ):
        self.factory = factory
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
        self.files = files  # where the job's files are stored (data directory or a bucket)
        self.clock = clock
        self.suspend = suspend or threading.Event()
        # How long the last writes of a run are retried while the database is unavailable.
        self.retry_seconds = retry_seconds
        self.progress: Progress | None = None
        self.lost = False  # the job was taken away (lease expired, re-queued)
        self.cancel_requested = False
        self._pending: dict[tuple[str, int], dict[str, Any]] = {}
        self._progress_dirty = False
        # Durable, not yet recorded: the engine's file, then (once stored) its key too.
        self._checkpoint: tuple[Path, int, int] | StoredCheckpoint | None = None
        self._failing = False  # the last write failed (logged once per outage)
        self._last_flush = clock()
        self._last_cancel_check = float("-inf")
        self.timeline: Timeline | None = None  # set once the job row has been read
        # A sweep trial's early-termination rule, judged at each flush; set with the row.
        self.judge: TrialJudge | None = None
        self.pruned = False

    # -- hooks called by core.train --------------------------------------------------

    def on_metrics(self, series: list[MetricSeries]) -> None:
        now = utcnow()
        for one in series:
            for step, epoch, value in zip(one.steps, one.epochs, one.values, strict=True):
                if not math.isfinite(value):  # SQL NULL in SQLite, and no use on a chart
                    continue
                self._pending[(one.name, step)] = {
                    "job_id": self.job_id,
                    "name": one.name,
                    "step": step,
                    "epoch": epoch,
                    "value": value,
                    "time": now,
                }

    def on_progress(self, progress: Progress) -> None:
        self.progress = progress
        self._progress_dirty = True
        self._flush_when_due()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.judge is not None and epoch + 1 in self.judge.pending:
            self.flush()  # a decision epoch of the trial's sweep: judged now
        else:
            self._flush_when_due()  # an epoch's metrics wait at most FLUSH_SECONDS

    def pause_after_epochs(self) -> Collection[int]:
        return () if self.judge is None else frozenset(self.judge.pending)

    def on_checkpoint(self, path: str, epoch: int, step: int) -> None:
        self.flush(checkpoint=(Path(path), epoch, step))

    def on_phase(self, phase: Phase) -> None:
        if self.timeline is not None:
            self.timeline.reached(phase, utcnow())
            self._progress_dirty = True  # written with the next flush

    def should_stop(self) -> bool | StopReason:
        if self.pruned:
            return StopReason.PRUNED
        if self.lost or self.cancel_requested:
            return True
        if self.suspend.is_set():
            return StopReason.SUSPENDED
        if self.clock() - self._last_cancel_check < CANCEL_CHECK_SECONDS:
            return False
        self._last_cancel_check = self.clock()
        try:
            with transaction(self.factory) as session:
                flag = session.scalar(
                    select(Job.cancel_requested).where(
                        *owned(self.job_id, self.worker, self.attempt)
                    )
                )
        except SQLAlchemyError:
            log.warning("could not read cancel_requested; will retry", exc_info=True)
            return False
        if flag is None:
            self.lost = True
        self.cancel_requested = bool(flag)
        return self.lost or self.cancel_requested

    # -- writing ---------------------------------------------------------------------

    def _flush_when_due(self) -> None:
        if self.clock() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self, checkpoint: tuple[Path, int, int] | None = None) -> None:
        """Write buffered points, the latest progress and the newest checkpoint in one
        transaction.

        A database error keeps all three for the next flush, tried no sooner than
        FLUSH_SECONDS later: training goes on through a database restart, and the points
        are written once it is back (the checkpoint file itself is what a resume reads).
        """
        if checkpoint is not None:
            self._checkpoint = checkpoint  # a newer durable file replaces an unrecorded one
        try:
            self.write()
        except (SQLAlchemyError, StorageError):  # the database, or the object store
            self._last_flush = self.clock()  # not a new connection attempt per chunk
            if not self._failing:
                log.warning(
                    "job %s: could not write metrics; will retry", self.job_id, exc_info=True
                )
            self._failing = True

    def flush_until_written(self) -> None:
        """The last flush of a run: retried while the database is unavailable, for at most
        `retry_seconds`; then its error is raised."""
        retry_while_unavailable(self.write, seconds=self.retry_seconds, what=f"job {self.job_id}")

    def write(self) -> None:
        """`flush`, raising the database's error (with nothing lost from the buffer)."""
        checkpoint = self._checkpoint
        if (
            checkpoint is not None
            and not isinstance(checkpoint, StoredCheckpoint)
            and not checkpoint[0].is_file()
        ):
            # Pruned by the engine before it could be recorded (a resumed attempt writes
            # epochs below an abandoned attempt's newer files): there is nothing to record.
            log.warning("job %s: checkpoint %s is gone; not recording it", self.job_id, checkpoint)
            checkpoint = self._checkpoint = None
        if self.lost or not (self._pending or self._progress_dirty or checkpoint):
            return
        if checkpoint is not None and not isinstance(checkpoint, StoredCheckpoint):
            # Stored (uploaded, with object storage) before the row names it; a retry after
            # a database error reuses the stored key.
            path, epoch, step = checkpoint
            checkpoint = StoredCheckpoint(self.files.store_file(path), path, epoch, step)
            self._checkpoint = checkpoint
        with transaction(self.factory) as session:
            if not self._claim_write(session, checkpoint):
                self.lost = True
                log.warning("job %s is no longer ours; stopping", self.job_id)
                return
            upsert(
                session,
                Metric,
                list(self._pending.values()),
                keys=["job_id", "name", "step"],
                update=["epoch", "value", "time"],
            )
            obsolete = [] if checkpoint is None else self._record_checkpoint(session, checkpoint)
            self._judge(session)
        self.files.delete(obsolete)
        if self._failing:
            log.info("job %s: the database is back; buffered metrics written", self.job_id)
            self._failing = False
        self._pending.clear()
        self._progress_dirty = False
        self._checkpoint = None
        self._last_flush = self.clock()

    def _judge(self, session: Session) -> None:
        """A trial's stop rule over the epoch values just written (see TrialJudge)."""
        if self.judge is None or self.pruned:
            return
        recorded = {
            row["epoch"] + 1: row["value"]
            for (name, _step), row in self._pending.items()
            if name == self.judge.series
        }
        if recorded and self.judge.judge(session, recorded):
            self.pruned = True
            log.info("job %s: pruned by its sweep's early termination", self.job_id)

    def _claim_write(self, session: Session, checkpoint: StoredCheckpoint | None) -> bool:
        """Write the job row's part (conditional on owning it); False when not ours."""
        values: dict[str, Any] = {}
        if self.progress is not None:
            values["progress"] = JobProgress.of(self.progress)
            values["eta_seconds"] = self.progress.eta_seconds
        if checkpoint is not None:
            values["checkpoint_path"] = checkpoint.key
            values["checkpoint_epoch"] = checkpoint.epoch
        if self.timeline is not None:
            values.update(self.timeline.columns())
        if values:
            return update_owned_job(
                session, self.job_id, worker=self.worker, attempt=self.attempt, **values
            )
        mine = owned(self.job_id, self.worker, self.attempt)
        return session.scalar(select(Job.id).where(*mine)) is not None

    def artifact(
        self, kind: ArtifactKind, key: str, local: Path, epoch: int, step: int
    ) -> Artifact:
        """The row that records a stored file of this job (`local`: its copy on this host)."""
        return Artifact(
            job_id=self.job_id,
            kind=kind,
            path=key,
            epoch=epoch,
            step=step,
            size_bytes=local.stat().st_size,
        )

    def _record_checkpoint(self, session: Session, checkpoint: StoredCheckpoint) -> list[str]:
        """Add its row, and forget the older ones no longer kept; returns the keys whose
        stored files are to be deleted once this transaction has committed."""
        row = self.artifact(
            ArtifactKind.CHECKPOINT,
            checkpoint.key,
            checkpoint.local,
            checkpoint.epoch,
            checkpoint.step,
        )
        session.add(row)
        session.flush()
        recorded = session.execute(
            select(Artifact.id, Artifact.epoch, Artifact.path).where(
                Artifact.job_id == self.job_id, Artifact.kind == ArtifactKind.CHECKPOINT
            )
        ).all()
        obsolete = set(
            self.files.obsolete_checkpoints(
                [(r.id, r.epoch, r.path) for r in recorded], current=row.id
            )
        )
        if not obsolete:
            return []
        session.execute(delete(Artifact).where(Artifact.id.in_(obsolete)))
        return [row.path for row in recorded if row.id in obsolete]


class StoredCheckpoint(NamedTuple):
    """A durable checkpoint file once stored: its key, and the engine's local file."""

    key: str
    local: Path
    epoch: int
    step: int
