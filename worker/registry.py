"""The `workers` table: which worker slots exist, what they consume, whether they are idle.

A Celery worker with `--concurrency N` has N slots (pool processes), each running at most
one job; each slot is one row, so `running_job_id` means one thing. Each pool process
keeps its own row's `last_seen` fresh (`SlotHeartbeat`, also while idle), so a row goes
stale exactly when its process is gone; the supervisor of a job sets and clears the
slot's `running_job_id`. The API routes `device: auto` to an idle
GPU slot, and the reconciler re-sends a job that waits while a slot of its queue idles.

Each row also advertises `devices`, the local devices a job on that slot may split its
batch over (`resources.devices`), counted without JAX (`usable_device_count`). Slots of
one worker share its devices: a job uses devices 0…N-1 of its worker, so a worker with 8
GPUs runs one 8-device job or, with `--concurrency 8`, eight jobs that all sit on GPU 0
(handing each slot its own GPUs is not done yet).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
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
    devices: int = 1  # local devices a job may use (`resources.devices`)

    @classmethod
    def for_worker(
        cls, settings: Settings, queues: Sequence[str], concurrency: int = 1
    ) -> WorkerIdentity:
        has_gpu = "gpu" in queues
        # The variables JAX and CUDA read in the training process; read here, not through
        # Settings, because they are theirs and the training process inherits them as is.
        devices = usable_device_count(has_gpu, os.environ)
        return cls(settings.worker_name, tuple(queues), has_gpu, concurrency, devices)

    @property
    def slot_devices(self) -> int:
        """The devices each slot's jobs get: a GPU worker's GPUs split evenly between its
        slots (8 GPUs: `--concurrency 8` runs eight 1-GPU jobs at once, `--concurrency 1`
        one job of up to 8); all of them when there are fewer GPUs than slots, or on CPU."""
        if self.has_gpu and 1 < self.concurrency <= self.devices:
            return self.devices // self.concurrency
        return self.devices

    def slot_visible_gpus(self, environ: Mapping[str, str]) -> str | None:
        """`CUDA_VISIBLE_DEVICES` for the calling pool process's training processes: its
        slot's share of the GPUs (see `slot_devices`); None when it sees them all."""
        index = current_process_index()
        if self.slot_devices == self.devices or index is None:
            return None
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        names = [n.strip() for n in visible.split(",")] if visible else None
        names = names or [str(gpu) for gpu in range(self.devices)]
        first = (index % self.concurrency) * self.slot_devices
        return ",".join(names[first : first + self.slot_devices])

    def current_slot_name(self) -> str:
        """The slot of the calling pool process (its index is stable across replacements);
        `name` outside a pool, as when a test calls the task directly."""
        index = current_process_index()
        if self.concurrency == 1 or index is None:
            return self.name
        return f"{self.name}-{index}"


def nvidia_gpu_visible() -> bool:
    """Whether `nvidia-smi -L` lists a GPU: a check that needs no JAX in this process."""
    return _nvidia_gpu_count() > 0


_FORCED_HOST_DEVICES = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def usable_device_count(has_gpu: bool, environ: Mapping[str, str]) -> int:
    """How many local devices a training process of this worker will see, without JAX in
    this (Celery) process: the GPUs `nvidia-smi -L` lists, fewer when `CUDA_VISIBLE_DEVICES`
    names fewer; on CPU 1, unless `XLA_FLAGS` forces a host device count. At least 1."""
    if has_gpu:
        listed = _nvidia_gpu_count()
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            named = [part for part in visible.split(",") if part.strip()]
            listed = min(listed, len(named)) if listed else len(named)
        return max(1, listed)
    forced = _FORCED_HOST_DEVICES.findall(environ.get("XLA_FLAGS", ""))
    return max(1, int(forced[-1])) if forced else 1


def _nvidia_gpu_count() -> int:
    """The GPUs `nvidia-smi -L` lists (0 without the tool or a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listed.returncode != 0:
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def touch_slot(session: Session, identity: WorkerIdentity, name: str, now: datetime) -> None:
    """Mark a slot as seen now (a new slot starts idle); leaves `running_job_id` alone."""
    row = {
        "name": name,
        "queues": list(identity.queues),
        "has_gpu": identity.has_gpu,
        "devices": identity.slot_devices,
        "running_job_id": None,
        "last_seen": now,
        "idle_since": now,
    }
    update = ["queues", "has_gpu", "devices", "last_seen"]
    upsert(session, Worker, [row], keys=["name"], update=update)


def record_slot_job(
    session: Session, identity: WorkerIdentity, name: str, job_id: str | None, now: datetime
) -> None:
    """Set what a slot runs (None: idle since now)."""
    row: dict[str, Any] = {
        "name": name,
        "queues": list(identity.queues),
        "has_gpu": identity.has_gpu,
        "devices": identity.slot_devices,
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
