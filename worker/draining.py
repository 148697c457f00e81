"""Warm shutdown hands running jobs back instead of waiting for them to finish.

On SIGTERM or Ctrl-C Celery stops taking messages and waits for running tasks, which for a
training job can mean hours. The main process instead marks itself draining with a flag
file (it never touches the database: see worker/registry.py), and each pool process's
supervisor, which polls several times a second, stops its training process and re-queues
the job with the same attempt; it resumes from its last checkpoint elsewhere or after a
restart. A file, because pool processes ignore the signals the main process receives.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

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
