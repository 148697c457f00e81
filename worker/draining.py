"""Warm shutdown hands running jobs back instead of waiting for them to finish.

On SIGTERM or Ctrl-C Celery stops taking messages and waits for running tasks, which for a
training job can mean hours. The main process instead marks itself draining with a flag
file (it never touches the database: see worker/registry.py), and each pool process's
supervisor, which polls several times a second, asks its training process to checkpoint
and stop (up to `shutdown_grace_seconds`, then kills it) and re-queues the job with the
same attempt; it resumes from that checkpoint elsewhere or after a restart at once. A
file, because pool processes do not get the signals sent to the main process alone.

A SIGTERM sent to a whole process group (a service manager stopping the worker, `kill`
of the group) reaches the pool processes too. One that supervises a job then drains that
job as above instead of dying with it (`supervising`); an idle one exits as before.
"""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from app.config import Settings


def drain_flag(settings: Settings, main_pid: int) -> Path:
    # In the host's (or container's) own temporary directory, never the shared data
    # directory: worker containers all have the same pids, so one replica's flag there
    # would drain every other replica too. Named by the data directory as well, so that
    # services on one host that share a temporary directory never see each other's.
    data_dir = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "backprop-workers"
    return folder / f"{data_dir}-{settings.worker_name}-{main_pid}.draining"


def mark_draining(settings: Settings) -> None:
    """In the Celery main process, when its shutdown starts."""
    flag = drain_flag(settings, os.getpid())
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()


def clear_draining(settings: Settings) -> None:
    """In the Celery main process, at start and at exit (pids are reused)."""
    drain_flag(settings, os.getpid()).unlink(missing_ok=True)


def is_draining(settings: Settings) -> bool:
    """In a pool process: has the Celery main process (our parent) begun shutting down?"""
    return drain_flag(settings, os.getppid()).exists()


_terminated = threading.Event()  # this pool process got SIGTERM while it supervised a job


@contextmanager
def supervising() -> Iterator[None]:
    """Around the supervision of one job in a pool process: a SIGTERM meanwhile drains
    that job (see `stop_requested`) instead of ending the process under it. Outside, the
    pool's own handling applies (billiard's: exit). Only the main thread can set signal
    handlers; elsewhere (a test calling the task from a thread) this changes nothing."""
    _terminated.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        _terminated.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terminated.clear()


def stop_requested(settings: Settings) -> bool:
    """Whether the job this pool process supervises should be handed back: its worker
    is draining, or this process got SIGTERM while supervising it."""
    return _terminated.is_set() or is_draining(settings)


def drain_begins_within(settings: Settings, seconds: float) -> bool:
    """Whether this worker is, or starts within `seconds`, shutting down (a training
    process that suspended on a signal sent to the whole process group may beat the
    flag)."""
    deadline = time.monotonic() + seconds
    while not stop_requested(settings):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
