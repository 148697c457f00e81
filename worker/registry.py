"""The `workers` table: which worker slots exist, what they consume, whether they are idle.

A Celery worker with `--concurrency N` has N slots (pool processes), each running at most
one job; each slot is one row, so `running_job_id` means one thing. Each pool process
keeps its own row's `last_seen` fresh (`SlotHeartbeat`, also while idle), so a row goes
stale exactly when its process is gone; the supervisor of a job sets and clears the
slot's `running_job_id`. The API routes `device: auto` to an idle
GPU slot, and the reconciler re-sends a job that waits while a slot of its queue idles.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.utils.log import current_process_index
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.models import Worker
from app.domain.db.types import utcnow
from worker.db import upsert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    """One Celery worker: its name (`settings.worker_name`), queues and slot count."""

    name: str
    queues: tuple[str, ...]
    has_gpu: bool
    concurrency: int = 1

    @classmethod
    def for_worker(
        cls, settings: Settings, queues: Sequence[str], concurrency: int = 1
    ) -> WorkerIdentity:
        return cls(settings.worker_name, tuple(queues), "gpu" in queues, concurrency)

    def current_slot_name(self) -> str:
        """The slot of the calling pool process (its index is stable across replacements);
        `name` outside a pool, as when a test calls the task directly."""
        index = current_process_index()
        if self.concurrency == 1 or index is None:
            return self.name
        return f"{self.name}-{index}"


def nvidia_gpu_visible() -> bool:
    """Whether `nvidia-smi -L` lists a GPU: a check that needs no JAX in this process."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def touch_slot(session: Session, identity: WorkerIdentity, name: str, now: datetime) -> None:
    """Mark a slot as seen now (a new slot starts idle); leaves `running_job_id` alone."""
    row = {
        "name": name,
        "queues": list(identity.queues),
        "has_gpu": identity.has_gpu,
        "running_job_id": None,
        "last_seen": now,
        "idle_since": now,
    }
    upsert(session, Worker, [row], keys=["name"], update=["queues", "has_gpu", "last_seen"])


def record_slot_job(
    session: Session, identity: WorkerIdentity, name: str, job_id: str | None, now: datetime
) -> None:
    """Set what a slot runs (None: idle since now)."""
    row: dict[str, Any] = {
        "name": name,
        "queues": list(identity.queues),
        "has_gpu": identity.has_gpu,
        "running_job_id": job_id,
        "last_seen": now,
        "idle_since": None if job_id else now,
    }
    upsert(session, Worker, [row], keys=["name"], update=[c for c in row if c != "name"])


class SlotHeartbeat:
    """A thread in a pool process that keeps its slot's row fresh, also while idle.

    It runs in the pool process, not in the Celery main process: pool processes are forked
    from the main one, and a fork while another thread is inside the database driver
    leaves the child waiting forever on a lock (SQLite's allocator mutex, for one). A pool
    process itself only ever starts children with fork + exec, which is safe.
    """

    def __init__(self, settings: Settings, identity: WorkerIdentity):
        self.settings = settings
        self.identity = identity
        self.slot = identity.current_slot_name()

    def start(self) -> None:
        """Start the thread; it ends with its process (a daemon thread)."""
        threading.Thread(target=self._run, name="backprop-slot", daemon=True).start()

    def _run(self) -> None:
        # No connection pool: nothing is held open between heartbeats.
        engine = make_engine(self.settings.resolved_database_url, poolclass=NullPool)
        factory = make_sessionmaker(engine)
        first = True
        while True:
            try:
                with transaction(factory) as session:
                    if first:  # a new pool process runs nothing yet
                        record_slot_job(session, self.identity, self.slot, None, utcnow())
                    else:
                        touch_slot(session, self.identity, self.slot, utcnow())
                first = False
            except SQLAlchemyError:
                log.warning("could not record worker slot %s", self.slot, exc_info=True)
            time.sleep(self.settings.heartbeat_seconds)
