"""The workers' Celery app, built by a factory from Settings, and how a worker starts.

On top of `app.queue.celery_config` (acks late, reject on worker lost, prefetch 1,
explicit queues, results ignored, the filesystem broker's folders in the data directory):
no task events. Pool processes are long-lived (they never import JAX; each job trains in
a process of its own), so each keeps its slot's warm spares (`worker.spares`) from job to
job, and a job sent right after another does not wait for a new pool process. Gossip, mingle
and event heartbeats are off: workers need nothing from each other, and on the filesystem
broker every broadcast leaves files behind.

The main process only consumes messages: it never imports JAX and never touches the
database (a fork while a thread is inside a database driver deadlocks the forked pool
process). Each pool process runs one `backprop.run_job` at a time, which supervises a
spawned training process, and keeps its slot's `workers` row fresh.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from celery import Celery, current_app
from celery.signals import worker_process_init, worker_shutdown, worker_shutting_down

from app.config import Settings
from app.queue import QUEUES, celery_config
from worker.draining import clear_draining, mark_draining
from worker.registry import SlotHeartbeat, WorkerIdentity, nvidia_gpu_visible
from worker.spares import start_spares
from worker.tasks import register_tasks

log = logging.getLogger(__name__)


def worker_config(settings: Settings) -> dict[str, Any]:
    config = celery_config(settings)
    config.update(worker_send_task_events=False, task_send_sent_event=False)
    return config


def make_worker_celery(
    settings: Settings, queues: Sequence[str] = ("cpu",), concurrency: int = 1
) -> Celery:
    """A Celery app with the `backprop.run_job` task; its pool processes keep their
    `workers` rows fresh."""
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise ValueError(f"unknown queue(s) {unknown}; choose from {', '.join(QUEUES)}")
    identity = WorkerIdentity.for_worker(settings, queues, concurrency)
    celery = Celery("backprop-worker")
    celery.conf.update(worker_config(settings))
    register_tasks(celery, settings, identity)
    _keep_slots_registered(celery, settings, identity)
    return celery


def _keep_slots_registered(celery: Celery, settings: Settings, identity: WorkerIdentity) -> None:
    """Start a `SlotHeartbeat` and the slot's spares in each pool process this app's
    worker starts."""

    def on_process_init(**_: Any) -> None:
        if current_app._get_current_object() is celery:
            SlotHeartbeat(settings, identity).start()
            start_spares(settings, identity.queues, identity.slot_visible_gpus(os.environ))

    worker_process_init.connect(on_process_init, weak=False)


def worker_argv(
    settings: Settings, queues: Sequence[str], concurrency: int, loglevel: str = "INFO"
) -> list[str]:
    return [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--hostname=backprop@{settings.worker_name}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--loglevel={loglevel}",
    ]


def start_worker(
    settings: Settings, queues: Sequence[str], concurrency: int = 1, loglevel: str = "INFO"
) -> None:
    """Run a Celery worker in this process until it is stopped (SIGTERM / Ctrl-C); running
    jobs are then handed back to the queue (worker/draining.py).

    GPU workers let JAX allocate GPU memory as it needs it instead of 75% up front: the
    training processes inherit this environment.
    """
    if "gpu" in queues:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if not nvidia_gpu_visible():
            log.warning("this worker consumes the gpu queue but `nvidia-smi -L` lists no GPU")
    celery = make_worker_celery(settings, queues, concurrency)
    clear_draining(settings)
    worker_shutting_down.connect(lambda **_: mark_draining(settings), weak=False)
    worker_shutdown.connect(lambda **_: clear_draining(settings), weak=False)
    celery.worker_main(worker_argv(settings, queues, concurrency, loglevel))
