"""The training process: `python -m worker.train_process`, one per job.

Its stdin carries two JSON lines from the supervising slot (`worker.spares`): the worker's
Settings, then the job to run (`Assignment`). Between the two it gets ready: imports JAX
and the engine, initialises the device's backend, opens the compilation cache and runs a
tiny program. A warm spare is a process waiting for its second line; a job that found no
spare gets a process whose two lines were sent at once. stdin then stays open: EOF means
the supervisor is gone, and the process exits at once (before its job: nothing to do;
during it: the lease expires and the reconciler re-queues the job). This is the only
process that imports JAX.

Once it has its job, SIGTERM or SIGINT asks it to stop cooperatively: it trains on to the
next epoch boundary, writes a checkpoint there, records it and exits with EXIT_SUSPENDED
(the supervisor sends SIGTERM when its worker shuts down, and hands the job back; a whole
process group stopped at once, by Ctrl-C or a service manager, reaches it directly).

Exit statuses the supervisor reads (a job left running after any of them was not finished
by this process): 0 (done, or the job's own failure written), EXIT_ORPHANED,
EXIT_SUSPENDED; anything else is a crash of the job's own making.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from pydantic import BaseModel

from app.config import Settings

EXIT_ORPHANED = 3  # the supervising worker is gone (a platform interruption)
EXIT_SUSPENDED = 4  # asked to stop: checkpointed at an epoch boundary and stopped
LOG_FORMAT = "%(asctime)s %(levelname)s train[{who}] %(name)s: %(message)s"


class Assignment(BaseModel):
    """The job a training process runs: the one `worker` claimed for `attempt`."""

    job_id: str
    worker: str
    attempt: int


def _exit_when_orphaned() -> None:
    def watch() -> None:
        for _ in sys.stdin:
            pass
        logging.getLogger(__name__).warning("the supervising worker is gone; exiting")
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _suspend_on_signals() -> threading.Event:
    """SIGTERM and SIGINT (Ctrl-C reaches the whole foreground group) set the returned
    event instead of ending the process; the job's recorder then suspends the run."""
    suspend = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not suspend.is_set():
            logging.getLogger(__name__).info(
                "got %s: stopping at the next epoch boundary, after a checkpoint",
                signal.Signals(signum).name,
            )
        suspend.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return suspend


def main() -> int:
    first = sys.stdin.readline()
    if not first:
        return 0
    settings = Settings.model_validate_json(first)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT.format(who=f"spare {os.getpid()}"))
    from worker.runner import get_ready, run_claimed_job  # JAX: in this process only

    get_ready(settings)
    second = sys.stdin.readline()
    if not second:
        return 0  # the slot went away (or shut down) before it had a job for us
    job = Assignment.model_validate_json(second)
    suspend = _suspend_on_signals()
    _exit_when_orphaned()
    logging.basicConfig(
        level=logging.INFO, format=LOG_FORMAT.format(who=job.job_id[:8]), force=True
    )
    status = run_claimed_job(
        settings, job.job_id, worker=job.worker, attempt=job.attempt, suspend=suspend
    )
    return EXIT_SUSPENDED if status is None and suspend.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
