"""The service's state as Prometheus metrics, read from the database at scrape time.

Jobs, queues, workers and training throughput live in the database, so they are right
however many API processes there are, and every process reports the same values:
aggregate them across instances with `max`, not `sum`. Six short queries per
scrape, plain reads (no transaction, so no write lock on SQLite).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import ColumnElement, Float, and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.domain.db.engine import reading
from app.domain.db.models import Job, Worker
from app.domain.db.models import Metric as MetricRow
from app.domain.db.types import utcnow
from app.domain.status import TERMINAL_STATUSES, JobStatus
from app.domain.timings import PHASES
from app.domain.timings import column as timing_column

log = logging.getLogger(__name__)

QUEUES = ("cpu", "gpu")  # always reported, 0 when empty
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# A small job's phases take tenths of a second; a big one's training, hours.
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400)
# Workers last seen longer ago than this are left out, so dead names do not pile up.
WORKER_WINDOW = timedelta(hours=24)
THROUGHPUT_SERIES = "samples_per_second"  # the engine's per-epoch metric


def _seconds_sqlite(start: Any, end: Any) -> ColumnElement[float]:
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _seconds_postgresql(start: Any, end: Any) -> ColumnElement[float]:
    return func.extract("epoch", end - start).cast(Float)


SECONDS_BETWEEN: dict[str, Callable[[Any, Any], ColumnElement[float]]] = {
    "sqlite": _seconds_sqlite,
    "postgresql": _seconds_postgresql,
}


class ServiceCollector(Collector):
    """Reads through `factory()`, which is None until the app has started."""

    def __init__(self, factory: Callable[[], sessionmaker[Session] | None]):
        self.factory = factory

    def describe(self) -> list[Metric]:
        return []  # names are not checked against other collectors; no query at registration

    def collect(self) -> Iterator[Metric]:
        factory = self.factory()
        if factory is None:
            return
        up = GaugeMetricFamily(
            "backprop_database_up", "1 when the last scrape could read the database"
        )
        try:
            with factory() as session, reading(session):
                families = list(_read_families(session, utcnow()))
        except SQLAlchemyError:
            log.warning("metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _read_families(session: Session, now: datetime) -> Iterator[Metric]:
    yield _jobs_by_status(session)
    yield from _queues(session, now)
    yield _job_durations(session)
    yield _job_phases(session)
    yield from _workers(session, now)
    yield _throughput(session)


def _jobs_by_status(session: Session) -> Metric:
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    family = GaugeMetricFamily("backprop_jobs", "Jobs by status (all tenants)", labels=["status"])
    for status in sorted({*JobStatus, *counts}):
        family.add_metric([status], counts.get(status, 0))
    return family


def _queues(session: Session, now: datetime) -> Iterator[Metric]:
    rows = session.execute(
        select(Job.queue, func.count(), func.min(func.coalesce(Job.enqueued_at, Job.created_at)))
        .where(Job.status == JobStatus.QUEUED)
        .group_by(Job.queue)
    ).all()
    by_queue = {queue: (count, oldest) for queue, count, oldest in rows}
    depth = GaugeMetricFamily(
        "backprop_queue_depth", "Jobs waiting in each queue", labels=["queue"]
    )
    wait = GaugeMetricFamily(
        "backprop_queue_oldest_wait_seconds",
        "How long the oldest queued job of each queue has waited since it was (re)queued",
        labels=["queue"],
    )
    for queue in sorted({*QUEUES, *by_queue}):
        count, oldest = by_queue.get(queue, (0, None))
        depth.add_metric([queue], count)
        wait.add_metric([queue], (now - oldest).total_seconds() if oldest else 0.0)
    yield depth
    yield wait


def _job_durations(session: Session) -> Metric:
    seconds = SECONDS_BETWEEN[session.get_bind().dialect.name](Job.started_at, Job.finished_at)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
    rows = session.execute(
        select(Job.status, func.count(), func.sum(seconds), *columns)
        .where(
            Job.status.in_(TERMINAL_STATUSES),
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )
        .group_by(Job.status)
    ).all()
    family = HistogramMetricFamily(
        "backprop_job_duration_seconds",
        "Seconds from a job's first start to its end, for finished jobs that ran, by status",
        labels=["status"],
    )
    by_status = {row[0]: row[1:] for row in rows}
    for status in TERMINAL_STATUSES:
        count, total, *cumulative = by_status.get(status, (0, 0.0, *[0] * len(DURATION_BUCKETS)))
        bounds = zip(DURATION_BUCKETS, cumulative, strict=True)
        buckets = [(floatToGoString(bound), int(n or 0)) for bound, n in bounds]
        family.add_metric([status], [*buckets, ("+Inf", int(count))], float(total or 0.0))
    return family


def _job_phases(session: Session) -> Metric:
    """One query: per phase column, the count, sum and bucket counts of finished jobs."""
    names = [*PHASES, "total"]
    selected: list[Any] = []
    for name in names:
        seconds = getattr(Job, timing_column(name))
        selected += [func.count(seconds), func.sum(seconds)]
        selected += [func.sum(case((seconds <= bound, 1), else_=0)) for bound in PHASE_BUCKETS]
    row = session.execute(select(*selected).where(Job.status.in_(TERMINAL_STATUSES))).one()
    family = HistogramMetricFamily(
        "backprop_job_phase_seconds",
        "Seconds finished jobs spent in each phase of their latest attempt (see the job "
        "body's `timings`), and in total",
        labels=["phase"],
    )
    width = 2 + len(PHASE_BUCKETS)
    for i, name in enumerate(names):
        count, total, *cumulative = row[i * width : (i + 1) * width]
        bounds = zip(PHASE_BUCKETS, cumulative, strict=True)
        buckets = [(floatToGoString(bound), int(n or 0)) for bound, n in bounds]
        family.add_metric([name], [*buckets, ("+Inf", int(count or 0))], float(total or 0.0))
    return family


def _workers(session: Session, now: datetime) -> Iterator[Metric]:
    rows = session.execute(
        select(Worker.name, Worker.last_seen, Worker.running_job_id).where(
            Worker.last_seen >= now - WORKER_WINDOW
        )
    ).all()
    seen = GaugeMetricFamily(
        "backprop_worker_last_seen_timestamp_seconds",
        "Unix time of each worker slot's last heartbeat (slots seen in the last 24 h)",
        labels=["worker"],
    )
    age = GaugeMetricFamily(
        "backprop_worker_heartbeat_age_seconds",
        "Seconds since each worker slot's last heartbeat",
        labels=["worker"],
    )
    busy = GaugeMetricFamily(
        "backprop_worker_busy", "1 while a worker slot runs a job", labels=["worker"]
    )
    for name, last_seen, running_job in rows:
        seen.add_metric([name], last_seen.timestamp())
        age.add_metric([name], max((now - last_seen).total_seconds(), 0.0))
        busy.add_metric([name], 0 if running_job is None else 1)
    yield from (seen, age, busy)


def _throughput(session: Session) -> Metric:
    running = select(Job.id).where(Job.status == JobStatus.RUNNING)
    latest = (
        select(MetricRow.job_id, func.max(MetricRow.step).label("step"))
        .where(MetricRow.name == THROUGHPUT_SERIES, MetricRow.job_id.in_(running))
        .group_by(MetricRow.job_id)
        .subquery()
    )
    rows = session.execute(
        select(Job.id, Job.queue, Job.worker, MetricRow.value)
        .join(latest, latest.c.job_id == Job.id)
        .join(
            MetricRow,
            and_(
                MetricRow.job_id == Job.id,
                MetricRow.name == THROUGHPUT_SERIES,
                MetricRow.step == latest.c.step,
            ),
        )
        .where(Job.status == JobStatus.RUNNING)
    ).all()
    family = GaugeMetricFamily(
        "backprop_training_samples_per_second",
        "Training throughput of each running job over its last finished epoch",
        labels=["job_id", "queue", "worker"],
    )
    for job_id, queue, worker, value in rows:
        family.add_metric([job_id, queue, worker or ""], float(value))
    return family
