"""What the event hub reads each tick, for every watched job at once.

A few statements per tick however many jobs and watchers there are: the watched jobs'
status columns (one SELECT), the full rows of the jobs whose status a watcher has not
seen yet (one SELECT, plus `job_public`'s queue position for queued ones), then the new
metric points of all of them (one SELECT). Plain reads (`reading`): no transaction, so
no write lock on SQLite. The jobs are read before their points: a worker commits its
last points before its terminal status, so a terminal status seen here always comes
with every point of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain.db.engine import reading
from app.domain.db.models import Job, Metric
from app.domain.status import JobStatus
from app.domain.values import JobProgress
from app.schemas.jobs import JobPublic
from app.services import jobs

# (status, attempt, platform_interruptions): a change of any is a status event, so a job
# re-queued and claimed again between two polls still shows its interruption.
StatusKey = tuple[JobStatus, int, int]


@dataclass(frozen=True)
class JobState:
    status: JobStatus
    attempt: int
    progress: JobProgress | None
    eta_seconds: float | None
    platform_interruptions: int = 0

    @property
    def key(self) -> StatusKey:
        return (self.status, self.attempt, self.platform_interruptions)


@dataclass(frozen=True)
class Point:
    name: str
    step: int
    epoch: int
    value: float
    time: datetime


@dataclass(frozen=True)
class Watch:
    """One watched job: what its watchers have seen so far."""

    job_id: str
    metrics_since: datetime | None  # the oldest watcher's position; None: from the start
    seen_keys: frozenset[StatusKey | None]  # None: a watcher that has seen no status yet


@dataclass
class Updates:
    states: dict[str, JobState] = field(default_factory=dict)  # a deleted job is absent
    publics: dict[str, JobPublic] = field(default_factory=dict)  # where a status is due
    points: dict[str, list[Point]] = field(default_factory=dict)  # by (name, step)


def read_updates(factory: sessionmaker[Session], watches: Sequence[Watch]) -> Updates:
    """The current state of every watched job and the metric points newer than its watch."""
    updates = Updates()
    if not watches:
        return updates
    with factory() as session:
        with reading(session):
            rows = session.execute(
                select(
                    Job.id,
                    Job.status,
                    Job.attempt,
                    Job.progress,
                    Job.eta_seconds,
                    Job.platform_interruptions,
                ).where(Job.id.in_([watch.job_id for watch in watches]))
            ).all()
            updates.states = {row.id: JobState(*row[1:]) for row in rows}
            due = [watch.job_id for watch in watches if _status_due(watch, updates.states)]
            full = list(session.scalars(select(Job).where(Job.id.in_(due)))) if due else []
        for job in full:  # newer than the status columns read above: use them throughout
            updates.publics[job.id] = jobs.job_public(session, job)
            updates.states[job.id] = JobState(
                job.status, job.attempt, job.progress, job.eta_seconds, job.platform_interruptions
            )
        present = [watch for watch in watches if watch.job_id in updates.states]
        if present:
            with reading(session):
                updates.points = _new_points(session, present)
    return updates


def _status_due(watch: Watch, states: dict[str, JobState]) -> bool:
    state = states.get(watch.job_id)
    return state is not None and any(key != state.key for key in watch.seen_keys)


def _new_points(session: Session, watches: Sequence[Watch]) -> dict[str, list[Point]]:
    from_start = [watch.job_id for watch in watches if watch.metrics_since is None]
    conditions: list[ColumnElement[bool]] = [
        and_(Metric.job_id == watch.job_id, Metric.time > watch.metrics_since)
        for watch in watches
        if watch.metrics_since is not None
    ]
    if from_start:
        conditions.append(Metric.job_id.in_(from_start))
    rows = session.execute(
        select(Metric.job_id, Metric.name, Metric.step, Metric.epoch, Metric.value, Metric.time)
        .where(or_(*conditions))
        .order_by(Metric.job_id, Metric.name, Metric.step)
    ).all()
    points: dict[str, list[Point]] = {}
    for row in rows:
        points.setdefault(row.job_id, []).append(Point(*row[1:]))
    return points
