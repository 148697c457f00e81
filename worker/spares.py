"""Training processes started before their job: a warm spare per slot and device kind.

A job still gets a fresh process of its own (a crash, an OOM or a hard cancel frees
everything), but the slot starts it ahead of time: `python -m worker.train_process` gets
the Settings at once, gets ready (JAX imported, the backend up, the compilation cache
open, a warm-up program run) and waits for its job on stdin. `take` hands the job to a
spare, or to a freshly spawned process when none is alive, and starts the next spare at
once; a watcher thread replaces spares that die. A spare never holds a lease: the slot
claims the job first, then assigns it. A spare's stdin is a pipe from the slot, so when
the slot's process dies, its spares read EOF and exit.

No JAX here: this runs in the Celery pool process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass

from app.config import Settings
from worker.draining import stop_requested
from worker.train_process import Assignment

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often dead spares are replaced


@dataclass(frozen=True)
class Ownership:
    """A claimed job: run by `worker` for `attempt`, routed to `queue`."""

    job_id: str
    worker: str
    attempt: int
    queue: str


def device_for_queue(queue: str) -> str:
    """The device kind a job runs on: the `cpu` queue forces JAX onto the CPU."""
    return "gpu" if queue == "gpu" else "cpu"


def child_environment(device: str, visible_gpus: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.pop("JAX_PLATFORMS", None)  # let JAX pick the GPU
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if visible_gpus is not None:  # this slot's share of the worker's GPUs
            env["CUDA_VISIBLE_DEVICES"] = visible_gpus
    return env


def start_training_process(
    settings: Settings, device: str, visible_gpus: str | None = None
) -> subprocess.Popen[str]:
    """A training process for `device`, told the settings, getting ready for a job."""
    child = subprocess.Popen(
        [sys.executable, "-m", "worker.train_process"],
        stdin=subprocess.PIPE,
        env=child_environment(device, visible_gpus),
        text=True,
    )
    absolute = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    _send(child, absolute.model_dump_json())
    return child


def assign(child: subprocess.Popen[str], own: Ownership) -> None:
    """Give `child` its job. A child that died meanwhile is settled like a crash."""
    job = Assignment(job_id=own.job_id, worker=own.worker, attempt=own.attempt)
    if not _send(child, job.model_dump_json()):
        log.warning("job %s: the training process exited before it got the job", own.job_id)


def _send(child: subprocess.Popen[str], line: str) -> bool:
    assert child.stdin is not None
    try:
        child.stdin.write(line + "\n")
        child.stdin.flush()
    except (BrokenPipeError, ValueError):
        return False
    return True


def ask_to_stop(child: subprocess.Popen[str]) -> None:
    """Ask a training process to checkpoint at its next epoch boundary and exit
    (`worker.train_process`: SIGTERM suspends its job)."""
    if child.poll() is None:
        with suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)


def stop(child: subprocess.Popen[str]) -> None:
    """Kill `child` if it still runs, and reap it."""
    if child.poll() is None:
        child.kill()
    child.wait()
    if child.stdin is not None:
        with suppress(OSError):
            child.stdin.close()


class SparePool:
    """The spares of one slot: `per_device` ready processes for each device kind."""

    def __init__(
        self,
        settings: Settings,
        devices: set[str],
        per_device: int,
        visible_gpus: str | None = None,
    ):
        self.settings = settings
        self.visible_gpus = visible_gpus  # the slot's share of the GPUs (None: all)
        self.devices = sorted(devices)
        self.per_device = per_device
        self.spares: dict[str, list[subprocess.Popen[str]]] = {d: [] for d in self.devices}
        self.lock = threading.Lock()
        self.closed = threading.Event()

    def start(self) -> SparePool:
        self.refill()
        threading.Thread(target=self._watch, name="spare-watch", daemon=True).start()
        return self

    def take(self, own: Ownership) -> subprocess.Popen[str]:
        """A training process running `own`'s job: a spare if one is alive."""
        device = device_for_queue(own.queue)
        child = None
        with self.lock:
            waiting = self.spares.setdefault(device, [])
            while waiting and child is None:
                child = waiting.pop(0)
                if child.poll() is not None:  # died since the watcher last looked
                    stop(child)
                    child = None
        if child is None:
            child = start_training_process(self.settings, device, self.visible_gpus)
        assign(child, own)
        self.refill()
        return child

    def refill(self) -> None:
        """Reap spares that died and start new ones up to `per_device` each (none once the
        worker is shutting down: a spare killed with its process group stays dead)."""
        with self.lock:
            if self.closed.is_set() or stop_requested(self.settings):
                return
            for device in self.devices:
                alive = []
                for spare in self.spares[device]:
                    if spare.poll() is None:
                        alive.append(spare)
                    else:
                        log.warning(
                            "a %s spare exited (status %s); replacing it", device, spare.returncode
                        )
                        stop(spare)
                while len(alive) < self.per_device:
                    alive.append(start_training_process(self.settings, device, self.visible_gpus))
                self.spares[device] = alive

    def close(self) -> None:
        self.closed.set()
        with self.lock:
            for spares in self.spares.values():
                for spare in spares:
                    stop(spare)
                spares.clear()

    def _watch(self) -> None:
        while not self.closed.wait(WATCH_SECONDS):
            try:
                self.refill()
            except OSError:  # e.g. out of processes: try again later
                log.warning("could not start a spare training process", exc_info=True)


_pool: SparePool | None = None  # this pool process's spares, once its slot started them
_slot_gpus: str | None = None  # this pool process's share of the GPUs (None: all of them)


def start_spares(
    settings: Settings, queues: list[str] | tuple[str, ...], visible_gpus: str | None = None
) -> None:
    """Called once in each Celery pool process (worker_process_init); `visible_gpus` is
    its slot's `CUDA_VISIBLE_DEVICES` (`WorkerIdentity.slot_visible_gpus`)."""
    global _pool, _slot_gpus
    _slot_gpus = visible_gpus
    if settings.warm_spares > 0 and _pool is None:
        devices = {device_for_queue(q) for q in queues}
        _pool = SparePool(settings, devices, settings.warm_spares, visible_gpus)
        _pool.start()


def training_process_for(settings: Settings, own: Ownership) -> subprocess.Popen[str]:
    """A process running `own`'s job: from this slot's spares, or started now (no spares:
    `warm_spares` is 0, or the task runs outside a pool process, as in tests)."""
    if _pool is not None:
        return _pool.take(own)
    child = start_training_process(settings, device_for_queue(own.queue), _slot_gpus)
    assign(child, own)
    return child
