"""The sweep controller: tops a sweep up to `max_concurrent` active trials, never past
`max_trials`, and finishes it once every trial has ended.

Safe to run twice at once, and after any restart: each pass is one transaction that
locks the sweep's row (PostgreSQL: `SELECT … FOR UPDATE`; SQLite: every write
transaction holds the database's write lock) and reads the trials from the database, and a
unique (sweep, trial number) index makes a second insert of the same trial fail. It runs
on every reconciler pass of the API, right after a sweep is created, and in the worker as
soon as one of the sweep's trials has ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Sweep
from app.domain.db.types import utcnow
from app.domain.errors import QuotaExceeded
from app.domain.quotas import check_active_quota, check_storage_quota
from app.domain.status import ACTIVE_STATUSES, JobStatus, SweepStatus
from app.domain.submission import new_job, route_device
from app.domain.sweeps.definition import SweepDefinition, parse_path, with_values
from app.domain.sweeps.sampling import Suggestion, TrialOutcome, TrialRecord, suggest
from app.domain.values import JobError
from core.errors import SpecError
from core.spec import parse_spec

log = logging.getLogger(__name__)

SendJob = Callable[[str, str], None]  # (job id, queue)
PRUNED = "pruned"  # a trial's summary.stop_reason when early termination stopped it


def advance(
    factory: sessionmaker[Session], sweep_id: str, send: SendJob, settings: Settings
) -> list[str]:
    """One controller pass over a sweep; returns the ids of the trials it made (and sent)."""
    try:
        with transaction(factory) as session:
            made = top_up(session, sweep_id, settings)
    except IntegrityError:  # another controller made the same trial number first
        log.info("sweep %s: another controller topped it up first", sweep_id)
        return []
    send_trials(made, send)
    return [job.id for job in made]


def send_trials(made: Sequence[Job], send: SendJob) -> None:
    """Send the queued ones of the trials `top_up` made, once they are committed."""
    for job in made:
        if job.status == JobStatus.QUEUED:
            try:
                send(job.id, job.queue)
            except Exception:  # the row says queued: the reconciler re-sends it
                log.warning("trial %s: sending failed", job.id, exc_info=True)


def advance_running(factory: sessionmaker[Session], send: SendJob, settings: Settings) -> None:
    """A controller pass over every running sweep (the reconciler's part)."""
    with transaction(factory) as session:
        running = session.scalars(select(Sweep.id).where(Sweep.status == SweepStatus.RUNNING))
        sweep_ids = list(running)
    for sweep_id in sweep_ids:
        try:
            advance(factory, sweep_id, send, settings)
        except Exception:
            log.exception("sweep %s: controller pass failed; the next pass retries", sweep_id)


def advance_after_trial(
    factory: sessionmaker[Session], job_id: str, send: SendJob, settings: Settings
) -> None:
    """A controller pass over the sweep of `job_id`, if it is a trial (called when it ends)."""
    with transaction(factory) as session:
        sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    if sweep_id is not None:
        advance(factory, sweep_id, send, settings)


def cancel(session: Session, sweep: Sweep) -> bool:
    """Cancel a running sweep: its queued trials at once, its running ones at their next
    check. False (nothing changed) when the sweep has already ended."""
    now = utcnow()
    changed = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status == SweepStatus.RUNNING)
        .values(status=SweepStatus.CANCELLED, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(changed, "rowcount", 0):
        return False
    session.execute(
        update(Job)
        .where(Job.sweep_id == sweep.id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.sweep_id == sweep.id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return True


def trial_record(job: Job, definition: SweepDefinition) -> TrialRecord:
    """A trial row as the sampler sees it."""
    state = job.trial_sampler or {}
    encoded, notes = state.get("encoded", {}), state.get("notes", {})
    if job.status in ACTIVE_STATUSES:
        return TrialRecord(encoded, notes, TrialOutcome.ACTIVE)
    if job.status != JobStatus.SUCCEEDED:
        return TrialRecord(encoded, notes, TrialOutcome.FAILED)
    value = trial_value(job, definition)
    if is_pruned(job):
        epoch = (job.summary or {}).get("epochs_completed")
        return TrialRecord(encoded, notes, TrialOutcome.PRUNED, value, epoch)
    return TrialRecord(encoded, notes, TrialOutcome.COMPLETE, value)


def trial_value(job: Job, definition: SweepDefinition) -> float | None:
    """The sweep metric's value at the end of a finished trial (its summary's)."""
    value = (job.summary or {}).get(definition.metric.name)
    return float(value) if isinstance(value, int | float) else None


def is_pruned(job: Job) -> bool:
    return job.status == JobStatus.SUCCEEDED and (job.summary or {}).get("stop_reason") == PRUNED


def top_up(session: Session, sweep_id: str, settings: Settings) -> list[Job]:
    """In the caller's transaction: finish the sweep, or make its next trials (returned, to
    be sent with `send_trials` after the commit)."""
    sweep = session.scalars(select(Sweep).where(Sweep.id == sweep_id).with_for_update()).first()
    if sweep is None or sweep.status != SweepStatus.RUNNING:
        return []
    definition = SweepDefinition.model_validate(sweep.definition)
    trials = list(
        session.scalars(
            select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_number)
        ).all()
    )
    active = sum(1 for trial in trials if trial.status in ACTIVE_STATUSES)
    budget = definition.trials_budget
    if len(trials) >= budget and active == 0:
        sweep.status = SweepStatus.SUCCEEDED
        sweep.finished_at = utcnow()
        log.info("sweep %s: all %d trials ended", sweep_id, len(trials))
        return []
    room = min(definition.max_concurrent - active, budget - len(trials))
    if room > 0:  # the tenant's quotas count trials too: they wait for room
        try:
            room = min(room, check_active_quota(session, settings, sweep.tenant_id, adding=0))
            check_storage_quota(session, settings, sweep.tenant_id, adding=0)
        except QuotaExceeded:
            room = 0
    if room <= 0:
        return []
    history = [trial_record(trial, definition) for trial in trials]
    made = []
    for number in range(len(trials), len(trials) + room):
        suggestion = suggest(definition, history, number)
        job = _trial_job(session, settings, sweep, definition, number, suggestion)
        session.add(job)
        made.append(job)
        history.append(TrialRecord(suggestion.encoded, suggestion.notes, TrialOutcome.ACTIVE))
    session.flush()  # a duplicate trial number fails here, inside the transaction
    log.info("sweep %s: made trial(s) %s", sweep_id, [job.trial_number for job in made])
    return made


def _trial_job(
    session: Session,
    settings: Settings,
    sweep: Sweep,
    definition: SweepDefinition,
    number: int,
    suggestion: Suggestion,
) -> Job:
    """The job of trial `number`: the base spec with the suggested values. A draw that
    makes an invalid spec (a normal's tail, say) is a trial that failed at once."""
    values = {parse_path(path): value for path, value in suggestion.params.items()}
    data = with_values(definition.spec, values)
    data["name"] = f"{sweep.name}-{number}"
    fields: dict[str, Any] = {
        "sweep_id": sweep.id,
        "trial_number": number,
        "trial_params": suggestion.params,
        "trial_sampler": suggestion.sampler_state,
    }
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        base = parse_spec(definition.spec)
        job = new_job(settings, sweep.tenant_id, base, default_name=sweep.name, **fields)
        job.name, job.spec, job.queue = data["name"], data, "cpu"
        job.status, job.finished_at = JobStatus.FAILED, utcnow()
        job.error = JobError.of(exc, None)
        return job
    job = new_job(settings, sweep.tenant_id, spec, default_name=sweep.name, **fields)
    job.queue = route_device(session, spec.device)
    return job


def trial_counts(trials: Sequence[Job]) -> dict[str, int]:
    """API.md's `trials` counts of a sweep body (`pruned` trials are not `succeeded`)."""
    counts = {"total": len(trials), "pruned": 0, **{status.value: 0 for status in JobStatus}}
    for trial in trials:
        counts[PRUNED if is_pruned(trial) else trial.status.value] += 1
    return counts
