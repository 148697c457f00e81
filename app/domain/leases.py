"""Who runs a job: claims, leases, terminal writes and the reconciler's repairs.

The `jobs` row is the truth and every change of hands is one conditional UPDATE, so two
workers, a duplicated message and the reconciler can race freely: exactly one of them wins
and the others see a row count of 0. A running job is owned by `(worker, attempt)`; every
write a worker makes after its claim is conditional on still owning the job, so it never
overwrites what the reconciler decided after the worker's lease ran out.

No FastAPI or Celery here: the API's lifespan and the workers both call these.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Worker
from app.domain.db.types import utcnow
from app.domain.status import JobStatus
from app.domain.sweeps import controller as sweeps
from app.domain.timings import cleared_after_claim
from app.domain.values import JobError

log = logging.getLogger(__name__)

# Jobs the reconciler handles per pass, so one pass stays a short transaction.
RECONCILE_BATCH = 100

SendJob = Callable[[str, str], None]  # (job id, queue)


class LossCause(StrEnum):
    """Why a running job lost its training process; the two are counted apart.

    A kill of the platform's making (a signal from outside, the OOM killer, a worker that
    stopped renewing its lease) says nothing about the job: it is re-queued with the same
    `attempt` and `platform_interruptions` + 1, up to a generous safety cap. A crash of the
    job's own making (its training process exited on its own without reporting) uses up
    one of its `max_attempts`.
    """

    PLATFORM = "platform"
    CRASH = "crash"


@dataclass(frozen=True)
class Released:
    """What became of a running job whose worker is gone."""

    job_id: str
    queue: str
    status: JobStatus  # queued (to be sent again) | failed (worker_lost) | cancelled


def owned(job_id: str, worker: str, attempt: int) -> list[ColumnElement[bool]]:
    """The WHERE clause of every write a worker makes to a job it claimed."""
    return [
        Job.id == job_id,
        Job.status == JobStatus.RUNNING,
        Job.worker == worker,
        Job.attempt == attempt,
    ]


def _rowcount(session: Session, statement: Any) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


def claim_job(
    session: Session, job_id: str, *, worker: str, device: str, now: datetime, lease_seconds: float
) -> Job | None:
    """Take a queued job: running, owned by `worker`, leased until now + lease_seconds.

    Returns the claimed row, or None when it is not queued (already claimed, finished,
    cancelled, or a duplicate message): the caller then drops the message.
    """
    claimed = _rowcount(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            worker=worker,
            device=device,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
            eta_seconds=None,
        ),
    )
    if not claimed:
        return None
    job = session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).one()
    # A new attempt: its wait, and none of the phases after it yet (flushed on commit).
    waited = job_total_seconds(job, now)
    for name, value in {"claimed_at": now, **cleared_after_claim(waited)}.items():
        setattr(job, name, value)
    return job


def fair_next_job(session: Session, queue: str, devices: int = 1) -> str | None:
    """The queued job of `queue` to run next on a worker with `devices` local devices:
    round-robin by tenant, then queue order, among the jobs that fit it (`min_devices`).

    The tenant served longest ago (by its latest claim; one never served first) goes next,
    with its oldest queued job, so one tenant's thousand queued jobs never starve another
    tenant's one. A message only says that a worker of its queue should claim a job; each
    queued job has its own message, so every one of them gets a claim.
    """
    waiting = (
        select(Job.tenant_id, func.min(Job.created_at).label("oldest"))
        .where(Job.status == JobStatus.QUEUED, Job.queue == queue, Job.min_devices <= devices)
        .group_by(Job.tenant_id)
        .subquery()
    )
    served = (
        select(Job.tenant_id, func.max(Job.claimed_at).label("last"))
        .where(Job.tenant_id.in_(select(waiting.c.tenant_id)), Job.claimed_at.is_not(None))
        .group_by(Job.tenant_id)
        .subquery()
    )
    tenant = session.scalar(
        select(waiting.c.tenant_id)
        .outerjoin(served, served.c.tenant_id == waiting.c.tenant_id)
        .order_by(served.c.last.is_not(None), served.c.last, waiting.c.oldest)
        .limit(1)
    )
    if tenant is None:
        return None
    return session.scalar(
        select(Job.id)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.queue == queue,
            Job.tenant_id == tenant,
            Job.min_devices <= devices,
        )
        .order_by(Job.created_at, Job.id)
        .limit(1)
    )


def renew_lease(
    session: Session,
    job_id: str,
    *,
    worker: str,
    attempt: int,
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Extend the lease of a job `worker` still owns; False means it was taken away."""
    expires = now + timedelta(seconds=lease_seconds)
    return update_owned_job(
        session, job_id, worker=worker, attempt=attempt, lease_expires_at=expires
    )


def update_owned_job(
    session: Session, job_id: str, *, worker: str, attempt: int, **values: Any
) -> bool:
    """Write `values` (progress, checkpoint…) to a job `worker` still owns."""
    return bool(
        _rowcount(session, update(Job).where(*owned(job_id, worker, attempt)).values(**values))
    )


def finish_job(
    session: Session,
    job_id: str,
    *,
    worker: str,
    attempt: int,
    status: JobStatus,
    now: datetime,
    **values: Any,
) -> bool:
    """Give a job its terminal `status` (with summary, error, model_path… in `values`).

    Returns False, writing nothing, when `worker` no longer owns the job: the reconciler
    re-queued it, or another writer finished it first.
    """
    return update_owned_job(
        session,
        job_id,
        worker=worker,
        attempt=attempt,
        status=status,
        finished_at=now,
        lease_expires_at=None,
        **values,
    )


def job_total_seconds(job: Job, now: datetime) -> float:
    """The `total` timing of a job that ends at `now`: since it was created or re-queued."""
    return max((now - (job.enqueued_at or job.created_at)).total_seconds(), 0.0)


def release_lost_job(
    session: Session,
    job_id: str,
    *,
    now: datetime,
    reason: str,
    cause: LossCause,
    max_platform_interruptions: int,
    worker: str | None = None,
    attempt: int | None = None,
    lease_expired_before: datetime | None = None,
) -> Released | None:
    """A running job whose training process is gone: queued again, or failed with
    `worker_lost` when its budget for `cause` is spent; cancelled instead when a cancel
    was asked for.

    A crash re-queues it with attempt + 1 while attempts remain (`max_attempts`); a platform
    interruption re-queues it with the same attempt and `platform_interruptions` + 1 until
    that count would pass `max_platform_interruptions`.

    The update is conditional on what was read (owner, attempt, interruptions, cancel flag,
    and an expired lease when `lease_expired_before` is given), so a concurrent writer wins
    cleanly and None is returned.
    """
    job = session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).first()
    if job is None or job.status != JobStatus.RUNNING:
        return None
    if (worker is not None and job.worker != worker) or (
        attempt is not None and job.attempt != attempt
    ):
        return None
    conditions = [
        Job.id == job_id,
        Job.status == JobStatus.RUNNING,
        Job.worker.is_(None) if job.worker is None else Job.worker == job.worker,
        Job.attempt == job.attempt,
        Job.platform_interruptions == job.platform_interruptions,
        Job.cancel_requested == job.cancel_requested,
    ]
    if lease_expired_before is not None:
        conditions.append(Job.lease_expires_at < lease_expired_before)
    values = _after_loss(job, now, reason, cause, max_platform_interruptions)
    if not _rowcount(
        session, update(Job).where(*conditions).values(lease_expires_at=None, **values)
    ):
        return None
    log.warning(
        "job %s (attempt %d, %s): %s → %s", job_id, job.attempt, cause, reason, values["status"]
    )
    return Released(job_id, job.queue, values["status"])


def _after_loss(
    job: Job, now: datetime, reason: str, cause: LossCause, max_platform_interruptions: int
) -> dict[str, Any]:
    """The columns `release_lost_job` writes (besides the lease)."""
    ended = {"finished_at": now, "eta_seconds": None, "total_seconds": job_total_seconds(job, now)}
    if job.cancel_requested:
        return {"status": JobStatus.CANCELLED, **ended}
    again = {"status": JobStatus.QUEUED, "worker": None, "enqueued_at": now, "eta_seconds": None}
    if cause == LossCause.PLATFORM:
        interruptions = job.platform_interruptions + 1
        if interruptions <= max_platform_interruptions:
            return {**again, "platform_interruptions": interruptions}
        message = (
            f"{reason}; the platform interrupted it {interruptions} times, more than the "
            f"limit of {max_platform_interruptions}"
        )
        error = JobError.worker_lost(message, job.progress)
        return {
            "status": JobStatus.FAILED,
            "platform_interruptions": interruptions,
            "error": error,
            **ended,
        }
    if job.attempt < job.max_attempts:
        return {**again, "attempt": job.attempt + 1}
    message = f"{reason}; that was attempt {job.attempt} of {job.max_attempts}"
    return {
        "status": JobStatus.FAILED,
        "error": JobError.worker_lost(message, job.progress),
        **ended,
    }


def hand_back_job(
    session: Session, job_id: str, *, worker: str, attempt: int, now: datetime
) -> Released | None:
    """A job its worker gives up while shutting down: queued again with the same attempt and
    the same `platform_interruptions` (a clean stop is neither a crash nor an interruption:
    the worker asked its training process to checkpoint first), to resume from its last
    checkpoint on another worker or after a restart."""
    values = {
        "status": JobStatus.QUEUED,
        "worker": None,
        "lease_expires_at": None,
        "enqueued_at": now,
        "eta_seconds": None,
    }
    queue = session.scalar(select(Job.queue).where(*owned(job_id, worker, attempt)))
    if queue is None or not _rowcount(
        session, update(Job).where(*owned(job_id, worker, attempt)).values(**values)
    ):
        return None
    log.info("job %s (attempt %d): handed back by %s, which is stopping", job_id, attempt, worker)
    return Released(job_id, queue, JobStatus.QUEUED)


def requeue_expired(
    session: Session, now: datetime, *, max_platform_interruptions: int
) -> list[tuple[str, str]]:
    """Release every running job whose lease expired (a lost worker: a platform
    interruption); returns the re-queued (id, queue)s, which the caller sends to their
    queues after the commit."""
    expired = session.scalars(
        select(Job.id)
        .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        .order_by(Job.lease_expires_at)
        .limit(RECONCILE_BATCH)
    ).all()
    requeued = []
    for job_id in expired:
        released = release_lost_job(
            session,
            job_id,
            now=now,
            reason="its worker stopped renewing the lease",
            cause=LossCause.PLATFORM,
            max_platform_interruptions=max_platform_interruptions,
            lease_expired_before=now,
        )
        if released is not None and released.status == JobStatus.QUEUED:
            requeued.append((released.job_id, released.queue))
    return requeued


def resend_lost_messages(
    session: Session, now: datetime, *, waited_seconds: float, fresh_seconds: float
) -> list[tuple[str, str]]:
    """Queued jobs whose message was probably lost, marked as sent again now.

    A job counts as lost when it has waited `waited_seconds` since it was last sent while a
    worker of its queue, seen in the last `fresh_seconds`, has been idle for as long: with
    a prefetch of one, an idle worker takes a waiting message within a broker poll. Sending
    twice is harmless (claims are conditional), so erring towards re-sending is safe.
    """
    cutoff = now - timedelta(seconds=waited_seconds)
    idle = session.scalars(
        select(Worker).where(
            Worker.running_job_id.is_(None),
            Worker.last_seen >= now - timedelta(seconds=fresh_seconds),
            Worker.idle_since <= cutoff,
        )
    ).all()
    queues = sorted({queue for worker in idle for queue in worker.queues})
    if not queues:
        return []
    rows = session.execute(
        select(Job.id, Job.queue)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.queue.in_(queues),
            # A job no idle worker has the devices for waits for one (`waiting_for`).
            Job.min_devices <= max(worker.devices for worker in idle),
            func.coalesce(Job.enqueued_at, Job.created_at) <= cutoff,
        )
        .order_by(Job.created_at, Job.id)
        .limit(RECONCILE_BATCH)
    ).all()
    lost = [(job_id, queue) for job_id, queue in rows]
    if lost:
        _rowcount(
            session,
            update(Job)
            .where(Job.id.in_([job_id for job_id, _ in lost]), Job.status == JobStatus.QUEUED)
            .values(enqueued_at=now),
        )
        log.warning("re-sending %d queued job(s) whose message looks lost", len(lost))
    return lost


def reconcile(
    factory: sessionmaker[Session], send: SendJob, settings: Settings, now: datetime | None = None
) -> list[tuple[str, str]]:
    """One reconciler pass: release expired leases, find lost messages, then (after the
    commit) send every job that is queued again, and advance every running sweep. Returns
    the re-sent jobs."""
    now = now or utcnow()
    with transaction(factory) as session:
        due = requeue_expired(
            session, now, max_platform_interruptions=settings.max_platform_interruptions
        )
        due += resend_lost_messages(
            session,
            now,
            waited_seconds=settings.lease_seconds,
            fresh_seconds=settings.lease_seconds,
        )
    for job_id, queue in due:
        try:
            send(job_id, queue)
        except Exception:  # the next pass finds it again: it stays queued
            log.warning("job %s: sending to queue %r failed", job_id, queue, exc_info=True)
    # Sweeps whose trials ended while no worker could advance them (a cancel from the API,
    # a job failed here as worker_lost, a worker killed after its trial's terminal write).
    sweeps.advance_running(factory, send, settings)
    return due


async def reconcile_periodically(
    factory: sessionmaker[Session], send: SendJob, settings: Settings
) -> None:
    """Run `reconcile` every `settings.reconcile_seconds` until cancelled.

    The DB work runs in a thread; a cancel lets a pass in flight finish first, so the
    engine is never disposed under it.
    """
    while True:
        await asyncio.sleep(settings.reconcile_seconds)
        work = asyncio.ensure_future(asyncio.to_thread(reconcile, factory, send, settings))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            raise
        except Exception:
            log.exception("reconciler pass failed; retrying in %.1f s", settings.reconcile_seconds)
