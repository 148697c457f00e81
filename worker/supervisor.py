"""Run one job in a fresh training process and watch over it (the Celery side; no JAX).

`supervise_job` claims the job, hands it to a training process (a warm spare of this
slot, see `worker.spares`, or a fresh `python -m worker.train_process`), and until the
child exits: renews the lease every `heartbeat_seconds` (so a long compilation never loses
it), keeps the slot's `workers` row fresh, and polls `cancel_requested`. The child stops
cooperatively at its next chunk boundary; if it has not exited `CANCEL_GRACE_SECONDS`
after the parent saw the request, the parent kills it, so a cancel lands within 2 s.
The child writes the job's terminal state itself. A child that died without doing so has
its job re-queued (`release_lost_job`), counted by what killed it (`cause_of_exit`): a
kill of the platform's making (SIGKILL or SIGTERM from outside, the OOM killer, a child
orphaned or stopped without a shutdown) re-queues it with the same attempt and
`platform_interruptions` + 1; a crash of the job's own making (a non-zero exit, a fatal
signal such as SIGSEGV) with attempt + 1. Either fails with `worker_lost` once its budget
is spent.

When its worker shuts down (`worker.draining`), the supervisor asks the child to stop
(SIGTERM: it checkpoints at its next epoch boundary and exits with EXIT_SUSPENDED), waits
up to `shutdown_grace_seconds` while still renewing the lease, kills it after that, and
hands the job back with the same attempt and interruption count: the next worker to start
resumes it at once from that checkpoint.
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
from worker.draining import drain_begins_within, stop_requested, supervising
from worker.exits import cause_of_exit, describe_exit
from worker.registry import WorkerIdentity, record_slot_job
from worker.spares import (
    Ownership,
    ask_to_stop,
    device_for_queue,
    stop,
    training_process_for,
)
from worker.train_process import EXIT_SUSPENDED

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often cancel_requested and the child are checked
# Counted from when the parent saw the request (at most POLL_SECONDS after it was made),
# so a child that does not stop is killed at most 1.5 s after the request.
CANCEL_GRACE_SECONDS = 1.3
EXIT_GRACE_SECONDS = 2.0  # a child whose job was finished or taken away gets this long
CLAIM_TRIES = 3  # picks of the next job when other workers keep claiming it first
# A child that suspended itself on a signal sent to its whole process group may exit a
# moment before the drain flag appears: wait this long for it before counting the stop
# as an interruption.
DRAIN_FLAG_WAIT_SECONDS = 1.0
PASS_ON_SECONDS = 0.5  # a message that comes while shutting down waits this long, then is re-sent

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
    PASSED_ON = "passed_on"  # a message that came while shutting down, sent again


def supervise_job(
    job_id: str, *, settings: Settings, identity: WorkerIdentity, send: SendJob
) -> Outcome:
    """Claim `job_id` and run it to an end; returns what happened."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    try:
        with supervising():  # a SIGTERM to this pool process meanwhile drains the job
            return _supervise(factory, settings, identity, job_id, send)
    finally:
        engine.dispose()


def _supervise(
    factory: sessionmaker[Session],
    settings: Settings,
    identity: WorkerIdentity,
    job_id: str,
    send: SendJob,
) -> Outcome:
    slot = identity.current_slot_name()
    if stop_requested(settings):
        return _pass_on(factory, job_id, send)
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


def _pass_on(factory: sessionmaker[Session], job_id: str, send: SendJob) -> Outcome:
    """A message that reached this worker after it began shutting down (Celery may still
    deliver one, e.g. the one a hand-back just sent): sent again without a claim, so that
    the next worker to start finds it at once instead of after a lease's wait."""
    with transaction(factory) as session:
        queue = session.scalar(
            select(Job.queue).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        )
    if queue is None:
        return Outcome.NOT_QUEUED
    time.sleep(PASS_ON_SECONDS)  # while Celery's consumer stops, not a tight loop
    log.info("job %s: this worker is stopping; its message is sent again", job_id)
    send(job_id, queue)
    return Outcome.PASSED_ON


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
            chosen = fair_next_job(session, queue, identity.slot_devices)
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
    drain_deadline: float | None = None  # set when this worker began shutting down
    killed_for_drain = False
    next_heartbeat = time.monotonic() + settings.heartbeat_seconds
    try:
        while True:
            try:
                child.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if drain_deadline is None and stop_requested(settings):
                log.info(
                    "job %s: this worker is stopping; asking the training process to "
                    "checkpoint and stop (within %g s), then handing the job back",
                    own.job_id,
                    settings.shutdown_grace_seconds,
                )
                ask_to_stop(child)
                drain_deadline = now + settings.shutdown_grace_seconds
            if drain_deadline is not None and now >= drain_deadline:
                log.warning(
                    "job %s: the training process did not stop within %g s; killing it",
                    own.job_id,
                    settings.shutdown_grace_seconds,
                )
                killed_for_drain = True
                stop(child)
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
    suspended = child.returncode == EXIT_SUSPENDED
    draining = drain_deadline is not None or (
        suspended and drain_begins_within(settings, DRAIN_FLAG_WAIT_SECONDS)
    )
    if draining and (suspended or killed_for_drain) and cancel_seen is None:
        return _hand_back(factory, settings, own, send)
    return _settle(factory, settings, own, child.returncode, send)


def _hand_back(
    factory: sessionmaker[Session], settings: Settings, own: Ownership, send: SendJob
) -> Outcome:
    with transaction(factory) as session:
        released = hand_back_job(
            session, own.job_id, worker=own.worker, attempt=own.attempt, now=utcnow()
        )
    if released is None:  # it finished or was taken meanwhile
        return _settle(factory, settings, own, None, send)
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
    factory: sessionmaker[Session],
    settings: Settings,
    own: Ownership,
    returncode: int | None,
    send: SendJob,
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
            reason=f"the training process {describe_exit(returncode)}",
            cause=cause_of_exit(returncode),
            max_platform_interruptions=settings.max_platform_interruptions,
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


def _record_slot(
    factory: sessionmaker[Session], identity: WorkerIdentity, slot: str, job_id: str | None
) -> None:
    try:
        with transaction(factory) as session:
            record_slot_job(session, identity, slot, job_id, utcnow())
    except SQLAlchemyError:  # the registry is a routing hint; the job row is the truth
        log.warning("could not update worker slot %s", slot, exc_info=True)
