"""Run one job in a fresh training process and watch over it (the Celery side; no JAX).

`supervise_job` claims the job, hands it to a training process (a warm spare of this
slot, see `worker.spares`, or a fresh `python -m worker.train_process`), and until the
child exits: renews the lease every `heartbeat_seconds` (so a long compilation never loses
it), keeps the slot's `workers` row fresh, and polls `cancel_requested`. The child stops
cooperatively at its next chunk boundary; if it has not exited `CANCEL_GRACE_SECONDS`
after the parent saw the request, the parent kills it, so a cancel lands within 2 s.
The child writes the job's terminal state itself; a child that died without doing so
(a signal, a crash) has its job re-queued with attempt + 1, or failed with `worker_lost`
once attempts are used up.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.models import Job
from app.domain.db.types import utcnow
from app.domain.leases import (
    claim_job,
    fair_next_job,
    finish_job,
    hand_back_job,
    job_total_seconds,
    owned,
    release_lost_job,
    renew_lease,
)
from app.domain.status import JobStatus
from app.domain.sweeps.controller import advance_after_trial
from worker.draining import is_draining
from worker.registry import WorkerIdentity, record_slot_job
from worker.spares import Ownership, device_for_queue, stop, training_process_for

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often cancel_requested and the child are checked
# Counted from when the parent saw the request (at most POLL_SECONDS after it was made),
# so a child that does not stop is killed at most 1.5 s after the request.
CANCEL_GRACE_SECONDS = 1.3
EXIT_GRACE_SECONDS = 2.0  # a child whose job was finished or taken away gets this long
CLAIM_TRIES = 3  # picks of the next job when other workers keep claiming it first

SendJob = Callable[[str, str], None]


class Outcome(StrEnum):
    """What supervising one message came to (for the log and the task's result)."""

    NOT_QUEUED = "not_queued"  # nothing to do: a duplicate or stale message
    FINISHED = "finished"  # the child wrote the terminal state
    CANCELLED = JobStatus.CANCELLED.value  # a cancel the child did not write: the parent did
    REQUEUED = "requeued"  # the child died; attempts remain
    FAILED = JobStatus.FAILED.value  # the child died on the last attempt: worker_lost
    TAKEN = "taken"  # the lease was lost to the reconciler
    HANDED_BACK = "handed_back"  # this worker is shutting down


def supervise_job(
    job_id: str, *, settings: Settings, identity: WorkerIdentity, send: SendJob
) -> Outcome:
    """Claim `job_id` and run it to an end; returns what happened."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    slot = identity.current_slot_name()
    try:
        own = _claim(factory, settings, identity, job_id, slot)
        if own is None:
            log.info("no queued job for the message of job %s; dropping it", job_id)
            return Outcome.NOT_QUEUED
        if own.job_id != job_id:
            log.info("the message of job %s went to job %s (fair share)", job_id, own.job_id)
            job_id = own.job_id
        log.info("job %s (attempt %d) claimed by %s", job_id, own.attempt, slot)
        _record_slot(factory, identity, slot, job_id)
        try:
            outcome = _watch(factory, settings, identity, own, send)
        finally:
            _record_slot(factory, identity, slot, None)
        log.info("job %s (attempt %d): %s", job_id, own.attempt, outcome)
        _advance_sweep(factory, settings, job_id, send)
        return outcome
    finally:
        engine.dispose()


def _advance_sweep(
    factory: sessionmaker[Session], settings: Settings, job_id: str, send: SendJob
) -> None:
    """A trial that ended makes room for its sweep's next one at once (the API's
    reconciler would, within a pass, if this fails)."""
    try:
        advance_after_trial(factory, job_id, send, settings)
    except Exception:
        log.exception("job %s: advancing its sweep failed; the reconciler will", job_id)


def _claim(
    factory: sessionmaker[Session],
    settings: Settings,
    identity: WorkerIdentity,
    job_id: str,
    slot: str,
) -> Ownership | None:
    """Claim the job fair share says is next in the queue of `job_id`'s message: often
    that job, else another tenant's (whose own message then claims this one)."""
    for _ in range(CLAIM_TRIES):
        with transaction(factory) as session:
            queue = session.scalar(select(Job.queue).where(Job.id == job_id))
            if queue is None or queue not in identity.queues:
                # A message can only reach a queue this worker consumes, unless it was
                # misrouted: a `gpu` job must never train on a CPU-only worker.
                return None
            chosen = fair_next_job(session, queue)
            if chosen is None:
                return None
            job = claim_job(
                session,
                chosen,
                worker=slot,
                device=device_for_queue(queue),
                now=utcnow(),
                lease_seconds=settings.lease_seconds,
            )
            if job is not None:
                return Ownership(job.id, slot, job.attempt, job.queue)
        # Another worker claimed the chosen job between the pick and the claim.
    return None


def _watch(
    factory: sessionmaker[Session],
    settings: Settings,
    identity: WorkerIdentity,
    own: Ownership,
    send: SendJob,
) -> Outcome:
    child = training_process_for(settings, own)
    cancel_seen: float | None = None
    taken_at: float | None = None
    draining = False
    next_heartbeat = time.monotonic() + settings.heartbeat_seconds
    try:
        while True:
            try:
                child.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if is_draining(settings):
                log.info("job %s: this worker is stopping; handing the job back", own.job_id)
                draining = True
                break
            try:
                state = _read_state(factory, own)
                if state is not None and now >= next_heartbeat:
                    _heartbeat(factory, settings, identity, own)
                    next_heartbeat = now + settings.heartbeat_seconds
            except SQLAlchemyError:  # a DB hiccup: the lease outlives a few missed polls
                log.warning("job %s: database unreachable while supervising", own.job_id)
                continue
            if state is None:  # finished by the child, or re-queued by the reconciler
                taken_at = taken_at or now
                if now - taken_at >= EXIT_GRACE_SECONDS:
                    stop(child)
                    break
            elif state and cancel_seen is None:
                cancel_seen = now
            if cancel_seen is not None and now - cancel_seen >= CANCEL_GRACE_SECONDS:
                log.warning(
                    "job %s: still running %.1f s after a cancel; killing it",
                    own.job_id,
                    CANCEL_GRACE_SECONDS,
                )
                stop(child)
                break
    finally:
        stop(child)
    if draining:
        return _hand_back(factory, own, send)
    return _settle(factory, own, child.returncode, send)


def _hand_back(factory: sessionmaker[Session], own: Ownership, send: SendJob) -> Outcome:
    with transaction(factory) as session:
        released = hand_back_job(
            session, own.job_id, worker=own.worker, attempt=own.attempt, now=utcnow()
        )
    if released is None:
        return _settle(factory, own, None, send)  # it finished or was taken meanwhile
    try:
        send(released.job_id, released.queue)
    except Exception:  # the reconciler re-sends it: the row says queued
        log.warning("job %s: re-sending failed", own.job_id, exc_info=True)
    return Outcome.HANDED_BACK


def _read_state(factory: sessionmaker[Session], own: Ownership) -> bool | None:
    with transaction(factory) as session:
        return _read_state_in(session, own)


def _heartbeat(
    factory: sessionmaker[Session], settings: Settings, identity: WorkerIdentity, own: Ownership
) -> None:
    with transaction(factory) as session:
        now = utcnow()
        renewed = renew_lease(
            session,
            own.job_id,
            worker=own.worker,
            attempt=own.attempt,
            now=now,
            lease_seconds=settings.lease_seconds,
        )
        record_slot_job(session, identity, own.worker, own.job_id if renewed else None, now)


def _settle(
    factory: sessionmaker[Session], own: Ownership, returncode: int | None, send: SendJob
) -> Outcome:
    """After the child exited: nothing to do if it (or the reconciler) settled the job;
    otherwise it died without reporting."""
    with transaction(factory) as session:
        state = _read_state_in(session, own)
        if state is None:
            job = session.get(Job, own.job_id)
            if job is None or (job.worker, job.attempt) != (own.worker, own.attempt):
                return Outcome.TAKEN
            return Outcome.FINISHED
        if state:
            job = session.get(Job, own.job_id)
            now = utcnow()
            finish_job(
                session,
                own.job_id,
                worker=own.worker,
                attempt=own.attempt,
                status=JobStatus.CANCELLED,
                now=now,
                eta_seconds=None,
                total_seconds=None if job is None else job_total_seconds(job, now),
            )
            return Outcome.CANCELLED
        released = release_lost_job(
            session,
            own.job_id,
            worker=own.worker,
            attempt=own.attempt,
            now=utcnow(),
            reason=f"the training process {_describe_exit(returncode)}",
        )
    if released is None:
        return Outcome.TAKEN
    if released.status == JobStatus.QUEUED:
        try:
            send(released.job_id, released.queue)
        except Exception:  # the reconciler re-sends it: the row says queued
            log.warning("job %s: re-sending failed", own.job_id, exc_info=True)
        return Outcome.REQUEUED
    return Outcome(released.status)


def _read_state_in(session: Session, own: Ownership) -> bool | None:
    """`cancel_requested` of a job we still own; None when we no longer own it."""
    return session.scalar(
        select(Job.cancel_requested).where(*owned(own.job_id, own.worker, own.attempt))
    )


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited with status {returncode} without reporting a result"


def _record_slot(
    factory: sessionmaker[Session], identity: WorkerIdentity, slot: str, job_id: str | None
) -> None:
    try:
        with transaction(factory) as session:
            record_slot_job(session, identity, slot, job_id, utcnow())
    except SQLAlchemyError:  # the registry is a routing hint; the job row is the truth
        log.warning("could not update worker slot %s", slot, exc_info=True)
