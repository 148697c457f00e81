"""The Celery side never loads JAX, and `python -m worker` runs jobs from a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Worker
from app.domain.db.types import utcnow
from app.domain.leases import requeue_expired
from app.queue import JobQueue
from tests.specs import endless_digits_mlp
from tests.worker.conftest import MakeJob, read_job, wait_for


def _loads_jax(pid: int) -> bool:
    """Whether process `pid` has XLA's shared library mapped (i.e. imported jax)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "jaxlib" in maps or "xla_extension" in maps


def _children(pid: int, live: bool = False) -> list[int]:
    """Child pids of `pid`; with `live`, not the zombies of children not yet reaped."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and not (live and state == "Z"):
                found.append(int(entry.name))
    return found


def test_the_task_process_never_imports_jax(
    factory: sessionmaker[Session], make_job: MakeJob, settings: Settings
) -> None:
    job_id = make_job()
    script = textwrap.dedent(
        f"""
        import sys
        from app.config import Settings
        from app.queue import RUN_JOB_TASK
        from worker.celery_app import make_worker_celery

        settings = Settings.model_validate_json({settings.model_dump_json()!r})
        task = make_worker_celery(settings, ["cpu"]).tasks[RUN_JOB_TASK]
        print(task({job_id!r}))
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["finished", "[]"], done.stderr
    assert read_job(factory, job_id).status == "succeeded"


@contextmanager
def _worker_process(settings: Settings, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m worker --queues cpu --concurrency 1`, configured by BACKPROP_* variables."""
    env = {
        **os.environ,
        "BACKPROP_DATA_DIR": str(settings.data_dir),
        "BACKPROP_WORKER_NAME": "smoke",
        "BACKPROP_HEARTBEAT_SECONDS": "0.5",
        "BACKPROP_LEASE_SECONDS": str(settings.lease_seconds),
    }
    log = cwd / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--queues", "cpu", "--concurrency", "1"],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    assert worker.returncode in (0, -signal.SIGKILL), log.read_text()[-5000:]


def test_python_m_worker_runs_jobs_sent_through_the_broker(
    factory: sessionmaker[Session], make_job: MakeJob, settings: Settings, tmp_path: Path
) -> None:
    with _worker_process(settings, tmp_path) as worker:
        # Two jobs, one after the other, in the same long-lived pool process.
        job_ids = [make_job(), make_job()]
        queue = JobQueue(settings)
        for job_id in job_ids:
            queue.send(job_id, "cpu")
        for job_id in job_ids:
            wait_for(lambda: read_job(factory, job_id).status == "succeeded", 90, what="a job")  # noqa: B023
            job = read_job(factory, job_id)
            assert (job.worker, job.attempt) == ("smoke", 1)

        with transaction(factory) as session:
            row = session.get(Worker, "smoke")
            assert row is not None
            assert (row.queues, row.has_gpu) == (["cpu"], False)
        assert not _loads_jax(worker.pid)
        assert not any(_loads_jax(pid) for pid in _children(worker.pid))
    assert worker.returncode == 0  # a warm shutdown
    assert not (tmp_path / "control").exists()  # broker files stay in the data directory


def test_a_killed_worker_leaves_no_process_behind_and_its_job_is_requeued(
    factory: sessionmaker[Session], make_job: MakeJob, settings: Settings, tmp_path: Path
) -> None:
    job_id = make_job(endless_digits_mlp())
    settings.lease_seconds = 2
    with _worker_process(settings, tmp_path) as worker:
        JobQueue(settings).send(job_id, "cpu")
        wait_for(lambda: getattr(read_job(factory, job_id).progress, "step", 0), 60, what="steps")
        (pool,) = _children(worker.pid)
        # The job's training process, and the warm spare started when it took the job.
        children = wait_for(lambda: len(_children(pool)) == 2 and _children(pool), 10)
        worker.kill()  # SIGKILL of the Celery main process alone
        worker.wait()
    # The pool process dies with its parent; the training processes see stdin close.
    for pid in (pool, *children):
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, what="no process left")  # noqa: B023
    assert read_job(factory, job_id).status == "running"  # until its lease runs out
    time.sleep(settings.lease_seconds)
    with transaction(factory) as session:
        assert requeue_expired(session, utcnow(), max_platform_interruptions=100) == [
            (job_id, "cpu")
        ]
    job = read_job(factory, job_id)
    assert (job.attempt, job.platform_interruptions) == (1, 1)  # a lost worker


def test_spares_replace_themselves_after_a_crash_a_job_and_a_killed_training_process(
    factory: sessionmaker[Session], make_job: MakeJob, settings: Settings, tmp_path: Path
) -> None:
    def one_spare(pool: int, other_than: int | None = None) -> int:
        def ready() -> int | None:
            live = _children(pool, live=True)
            if len(live) == 1 and live[0] != other_than and _loads_jax(live[0]):
                return live[0]
            return None

        # A first spare imports JAX and compiles its warm-up with an empty cache: on a
        # loaded 2-core CI machine that once took over 60 s.
        spare = wait_for(ready, 150, what="one warm spare")
        assert isinstance(spare, int)
        return spare

    queue = JobQueue(settings)
    with _worker_process(settings, tmp_path) as worker:
        (pool,) = wait_for(lambda: _children(worker.pid), 30, what="the pool process")
        spare = one_spare(pool)  # started with the slot, before any job: JAX imported

        os.kill(spare, signal.SIGKILL)  # a spare that dies is replaced
        spare = one_spare(pool, other_than=spare)

        job_id = make_job()  # a job goes to the spare (which exits after it); a new one starts
        queue.send(job_id, "cpu")
        wait_for(lambda: read_job(factory, job_id).status == "succeeded", 60, what="the job")
        spare = one_spare(pool, other_than=spare)

        # SIGKILL of the training process mid-job: re-queued with the same attempt (a
        # platform interruption), resumed from its checkpoint (by this worker again), and
        # still a spare ready.
        job_id = make_job(endless_digits_mlp())
        training = spare
        queue.send(job_id, "cpu")
        wait_for(lambda: read_job(factory, job_id).checkpoint_epoch, 60, what="a checkpoint")
        assert training in _children(pool, live=True)
        checkpoint_epoch = read_job(factory, job_id).checkpoint_epoch
        os.kill(training, signal.SIGKILL)

        def resumed() -> bool:
            job = read_job(factory, job_id)
            return (
                (job.attempt, job.platform_interruptions) == (1, 1)
                and job.status == "running"
                and job.progress is not None
            )

        wait_for(resumed, 60, what="the job resumed after one interruption")
        resumed_job = read_job(factory, job_id)
        assert resumed_job.progress is not None and checkpoint_epoch is not None
        assert resumed_job.progress.epoch >= checkpoint_epoch
        with transaction(factory) as session:
            row = session.get(Job, job_id)
            assert row is not None
            row.cancel_requested = True
        wait_for(lambda: read_job(factory, job_id).status == "cancelled", 30, what="cancel")
        one_spare(pool, other_than=training)
