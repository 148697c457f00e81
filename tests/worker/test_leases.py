"""Claims, leases and the reconciler against a real (SQLite) database."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Worker
from app.domain.db.types import utcnow
from app.domain.leases import (
    LossCause,
    claim_job,
    finish_job,
    reconcile,
    release_lost_job,
    renew_lease,
    requeue_expired,
    resend_lost_messages,
)
from app.main import create_app
from tests.worker.conftest import MakeJob, read_job, wait_for


def _claim(factory: sessionmaker[Session], job_id: str, worker: str) -> Job | None:
    with transaction(factory) as session:
        return claim_job(
            session, job_id, worker=worker, device="cpu", now=utcnow(), lease_seconds=30
        )


def _expire(factory: sessionmaker[Session], job_id: str) -> None:
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)


def test_claim_is_exclusive(factory: sessionmaker[Session], make_job: MakeJob) -> None:
    job_id = make_job()
    barrier = threading.Barrier(2)
    won: list[str] = []

    def claim(worker: str) -> None:
        barrier.wait()
        if _claim(factory, job_id, worker) is not None:
            won.append(worker)

    threads = [threading.Thread(target=claim, args=(name,)) for name in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    job = read_job(factory, job_id)
    assert (job.status, job.worker, job.attempt, job.device) == ("running", won[0], 1, "cpu")
    assert job.started_at is not None and job.lease_expires_at is not None
    assert _claim(factory, job_id, "w3") is None


def test_duplicate_message_for_a_running_job_is_a_no_op(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: Callable[[str], str]
) -> None:
    job_id = make_job()
    claimed = _claim(factory, job_id, "another-worker")
    assert claimed is not None
    before = read_job(factory, job_id)

    assert run_task(job_id) == "not_queued"
    assert run_task("no-such-job") == "not_queued"

    after = read_job(factory, job_id)
    assert (after.status, after.worker, after.attempt) == ("running", "another-worker", 1)
    assert after.lease_expires_at == before.lease_expires_at


def _requeue_expired(factory: sessionmaker[Session], cap: int = 100) -> list[tuple[str, str]]:
    with transaction(factory) as session:
        return requeue_expired(session, utcnow(), max_platform_interruptions=cap)


def test_an_expired_lease_is_a_platform_interruption_with_its_own_cap(
    factory: sessionmaker[Session], make_job: MakeJob
) -> None:
    job_id = make_job()
    healthy = make_job()
    assert _claim(factory, healthy, "alive") is not None

    for interruptions in (1, 2):
        assert _claim(factory, job_id, f"w{interruptions}") is not None
        _expire(factory, job_id)
        assert _requeue_expired(factory, cap=2) == [(job_id, "cpu")]
        job = read_job(factory, job_id)
        # A lost worker says nothing about the job: the same attempt, one more interruption.
        assert (
            job.status,
            job.attempt,
            job.platform_interruptions,
            job.worker,
            job.lease_expires_at,
        ) == ("queued", 1, interruptions, None, None)
        assert job.enqueued_at is not None

    assert _claim(factory, job_id, "w3") is not None
    _expire(factory, job_id)
    assert _requeue_expired(factory, cap=2) == []
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions) == ("failed", 1, 3)
    assert job.error is not None and job.error.code == "worker_lost"
    assert "interrupted it 3 times, more than the limit of 2" in job.error.message
    assert job.finished_at is not None
    assert read_job(factory, healthy).status == "running"  # its lease is still valid


def _release(factory: sessionmaker[Session], job_id: str, worker: str, cause: LossCause) -> Any:
    with transaction(factory) as session:
        return release_lost_job(
            session,
            job_id,
            now=utcnow(),
            reason="the training process died",
            cause=cause,
            max_platform_interruptions=100,
            worker=worker,
            attempt=read_job(factory, job_id).attempt,
        )


def test_crashes_use_up_attempts_and_interruptions_do_not(
    factory: sessionmaker[Session], make_job: MakeJob
) -> None:
    job_id = make_job()
    causes = [LossCause.CRASH, LossCause.PLATFORM, LossCause.PLATFORM, LossCause.CRASH]
    for number, cause in enumerate(causes):
        assert _claim(factory, job_id, f"w{number}") is not None
        released = _release(factory, job_id, f"w{number}", cause)
        assert released is not None and released.status == "queued"
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions) == ("queued", 3, 2)

    assert _claim(factory, job_id, "last") is not None
    released = _release(factory, job_id, "last", LossCause.CRASH)
    assert released is not None and released.status == "failed"
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions) == ("failed", 3, 2)
    assert job.error is not None and job.error.code == "worker_lost"
    assert "attempt 3 of 3" in job.error.message


def test_an_expired_job_with_a_cancel_request_is_cancelled_not_retried(
    factory: sessionmaker[Session], make_job: MakeJob
) -> None:
    job_id = make_job()
    assert _claim(factory, job_id, "w1") is not None
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.cancel_requested = True
    _expire(factory, job_id)
    assert _requeue_expired(factory) == []
    job = read_job(factory, job_id)
    assert (job.status, job.attempt) == ("cancelled", 1)


def test_a_worker_whose_job_was_requeued_cannot_write_to_it(
    factory: sessionmaker[Session], make_job: MakeJob
) -> None:
    job_id = make_job()
    assert _claim(factory, job_id, "slow") is not None
    _expire(factory, job_id)
    _requeue_expired(factory)
    with transaction(factory) as session:
        now = utcnow()  # queued again: nobody owns it
        assert not renew_lease(session, job_id, worker="slow", attempt=1, now=now, lease_seconds=30)
    assert _claim(factory, job_id, "fast") is not None  # the same attempt, another worker

    with transaction(factory) as session:
        now = utcnow()
        assert not renew_lease(session, job_id, worker="slow", attempt=1, now=now, lease_seconds=30)
        assert not finish_job(
            session, job_id, worker="slow", attempt=1, now=now, status="succeeded"
        )
    job = read_job(factory, job_id)
    assert (job.status, job.worker, job.attempt, job.platform_interruptions) == (
        "running",
        "fast",
        1,
        1,
    )


def _idle_worker(
    factory: sessionmaker[Session], queues: list[str], idle_for: float, seen_ago: float = 0
) -> None:
    now = utcnow()
    with transaction(factory) as session:
        session.add(
            Worker(
                name=f"w-{'-'.join(queues)}",
                queues=queues,
                has_gpu="gpu" in queues,
                running_job_id=None,
                last_seen=now - timedelta(seconds=seen_ago),
                idle_since=now - timedelta(seconds=idle_for),
            )
        )


def test_lost_messages_are_resent_when_a_worker_of_the_queue_idles(
    factory: sessionmaker[Session], make_job: MakeJob
) -> None:
    long_ago = utcnow() - timedelta(seconds=120)
    lost = make_job(created_at=long_ago)
    fresh = make_job()
    gpu_job = make_job(created_at=long_ago, queue="gpu")
    resend = {"waited_seconds": 30, "fresh_seconds": 30}

    with transaction(factory) as session:  # no worker idles: messages may just be waiting
        assert resend_lost_messages(session, utcnow(), **resend) == []
    _idle_worker(factory, ["cpu"], idle_for=60)
    with transaction(factory) as session:
        assert resend_lost_messages(session, utcnow(), **resend) == [(lost, "cpu")]
    with transaction(factory) as session:  # re-sent just now: not again before 30 s
        assert resend_lost_messages(session, utcnow(), **resend) == []
    assert read_job(factory, fresh).enqueued_at is None
    assert read_job(factory, gpu_job).enqueued_at is None


def test_reconcile_sends_after_the_commit(
    factory: sessionmaker[Session], make_job: MakeJob, settings: Settings
) -> None:
    job_id = make_job()
    assert _claim(factory, job_id, "gone") is not None
    _expire(factory, job_id)
    sent: list[tuple[str, str]] = []

    def send(job: str, queue: str) -> None:
        with transaction(factory) as session:  # the new state is committed and visible
            row = session.get(Job, job)
            assert row is not None and row.status == "queued"
        sent.append((job, queue))

    assert reconcile(factory, send, settings) == [(job_id, "cpu")]
    assert sent == [(job_id, "cpu")]


def _sent_message(queue_dir: Path) -> dict[str, Any] | None:
    """The headers of the one message in a filesystem-broker queue (they appear whole)."""
    files = list(queue_dir.glob("*.cpu.msg"))
    return json.loads(files[0].read_text())["headers"] if files else None


def test_the_api_lifespan_runs_the_reconciler(
    factory: sessionmaker[Session], make_job: MakeJob, settings: Settings
) -> None:
    job_id = make_job()
    assert _claim(factory, job_id, "gone") is not None
    _expire(factory, job_id)
    settings.reconcile_seconds = 0.05
    queue_dir = settings.broker_dir / "queue"

    with TestClient(create_app(settings)):
        wait_for(lambda: read_job(factory, job_id).status == "queued", 10, what="re-queue")
        headers = wait_for(lambda: _sent_message(queue_dir), 5, what="a message")
        assert (headers["task"], headers["argsrepr"]) == ("backprop.run_job", repr([job_id]))
        started = time.monotonic()
    assert time.monotonic() - started < 2  # shutdown does not wait out a reconcile interval
    job = read_job(factory, job_id)
    assert (job.attempt, job.platform_interruptions) == (1, 1)
