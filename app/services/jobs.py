"""Jobs: submit (validate, route, enqueue after the commit), read, list, cancel, model file.

The API only creates jobs and reads what workers write (status, progress, summary, error,
model_path); the one column it changes afterwards is a cancellation. Every DB access runs
in its own short `session.begin()` block: on SQLite each transaction holds the write lock.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from app.config import Settings
from app.domain.db.engine import reading
from app.domain.db.models import Job, Sweep
from app.domain.db.types import UTCDateTime, utcnow
from app.domain.errors import Conflict, NotFound
from app.domain.quotas import check_active_quota, check_storage_quota
from app.domain.status import ACTIVE_STATUSES, JobStatus, SweepStatus
from app.domain.storage import MissingObject, job_prefix, storage_for
from app.domain.submission import devices_waiting_for, new_job, route_device
from app.pagination import newest_first_page
from app.queue import JobQueue
from app.schemas.jobs import JobPublic, JobsPublic, JobsQuery
from app.services.job_checks import (
    check_datasets,
    check_init_from,
    check_limits,
    check_model_fits,
)
from core.spec import parse_spec

log = logging.getLogger(__name__)

# Built once: every request that names a job runs it, and building a statement costs
# about as much as the database's answer to it.
_TENANTS_JOB = select(Job).where(
    Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id")
)


def find_job(session: Session, tenant_id: str, job_id: str) -> Job | None:
    """The tenant's job with this id; another tenant's job is None, like a missing one."""
    with reading(session):
        return session.scalars(_TENANTS_JOB, {"job_id": job_id, "tenant_id": tenant_id}).first()


def submit_job(
    session: Session,
    queue: JobQueue,
    settings: Settings,
    tenant_id: str,
    body: dict[str, Any],
    idempotency_key: str | None = None,
) -> tuple[JobPublic, bool]:
    """Validate a JobSpec fully, store the job as queued, then send it to its queue.

    Returns the job and whether it was created (False: an earlier job with the same
    `idempotency_key`). Raises `SpecError` (422) for anything that would stop it running.
    """
    if idempotency_key and (earlier := _by_idempotency_key(session, tenant_id, idempotency_key)):
        return job_public(session, earlier), False
    spec = parse_spec(body)
    info = check_datasets(session, tenant_id, spec)
    check_limits(settings, spec, check_model_fits(spec, info))
    if spec.init_from is not None:
        source = find_job(session, tenant_id, spec.init_from.job)
        check_init_from(settings, spec, info, source)
    job = new_job(
        settings, tenant_id, spec, default_name=info.name, idempotency_key=idempotency_key
    )
    try:
        with session.begin():
            check_active_quota(session, settings, tenant_id, adding=1)
            check_storage_quota(session, settings, tenant_id, adding=0)  # its model is to come
            job.queue = route_device(session, spec.device)
            session.add(job)
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its job.
        earlier = _by_idempotency_key(session, tenant_id, idempotency_key or "")
        if earlier is None:
            raise
        return job_public(session, earlier), False
    _send(queue, job)
    return job_public(session, job), True


def list_jobs(session: Session, tenant_id: str, query: JobsQuery) -> JobsPublic:
    """The tenant's jobs, newest first, one page of at most `query.limit`."""
    statement = select(Job).where(Job.tenant_id == tenant_id)
    if query.status is not None:
        statement = statement.where(Job.status == query.status)
    if query.name is not None:
        statement = statement.where(Job.name == query.name)
    if query.sweep is not None:
        statement = statement.where(Job.sweep_id == query.sweep)
    with reading(session):
        page, next_cursor = newest_first_page(
            session,
            statement,
            created_at=Job.created_at,
            id=Job.id,
            limit=query.limit,
            cursor=query.cursor,
        )
        positions = _queue_positions(session, page)
        waiting = devices_waiting_for(session, page)
    return JobsPublic(
        data=[JobPublic.of(job, positions.get(job.id), waiting.get(job.id)) for job in page],
        next_cursor=next_cursor,
    )


def job_public(session: Session, job: Job) -> JobPublic:
    """The Job body of API.md, with the job's current place in its queue."""
    if job.status != JobStatus.QUEUED:
        return JobPublic.of(job)
    with reading(session):
        positions = _queue_positions(session, [job])
        waiting = devices_waiting_for(session, [job])
    return JobPublic.of(job, positions.get(job.id), waiting.get(job.id))


def cancel_job(session: Session, job: Job) -> JobPublic:
    """Cancel a queued job at once, or ask a running one to stop (its worker checks within 2 s).

    One conditional UPDATE decides, so a worker claiming the job at the same moment either
    finds it cancelled or sees `cancel_requested`. Raises Conflict for a finished job.
    """
    now = utcnow()
    was_queued = Job.status == JobStatus.QUEUED
    with session.begin():
        result = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status.in_(ACTIVE_STATUSES))
            .values(
                status=case(
                    (was_queued, literal(JobStatus.CANCELLED, Job.status.type)), else_=Job.status
                ),
                finished_at=case((was_queued, literal(now, UTCDateTime)), else_=Job.finished_at),
                cancel_requested=True,
            )
            .execution_options(synchronize_session=False)
        )
        changed = cast(CursorResult[Any], result).rowcount
        session.refresh(job)
    if not changed:
        raise Conflict(f"job {job.id} has already finished (status: {job.status})")
    return job_public(session, job)


def delete_job(session: Session, settings: Settings, job: Job) -> None:
    """Delete a finished job: its row (metrics and artifact rows with it), then its files
    (checkpoints and model), which frees its model's bytes from the storage quota.
    Conflict for a queued or running job, and for a trial of a sweep still running (the
    sweep's sampler learns from its trials)."""
    job_id, tenant_id = job.id, job.tenant_id
    with session.begin():
        active = session.execute(
            select(Job.id, Job.spec).where(
                Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES)
            )
        ).all()
        starting = [
            row.id for row in active if (row.spec.get("init_from") or {}).get("job") == job_id
        ]
        if starting:
            raise Conflict(
                f"job {job_id}'s model is the `init_from` of queued or running job(s) "
                f"{', '.join(starting[:5])}: wait for them to finish, or cancel them"
            )
        deleted = session.execute(
            delete(Job).where(
                Job.id == job_id,
                Job.status.not_in(ACTIVE_STATUSES),
                or_(
                    Job.sweep_id.is_(None),
                    ~exists().where(Sweep.id == Job.sweep_id, Sweep.status == SweepStatus.RUNNING),
                ),
            )
        )
        if not cast(CursorResult[Any], deleted).rowcount:
            session.refresh(job)
            if job.status in ACTIVE_STATUSES:
                raise Conflict(
                    f"job {job_id} is {job.status}: cancel it (POST /v1/jobs/{job_id}/cancel) "
                    "and wait for it to end, then delete it"
                )
            raise Conflict(
                f"job {job_id} is a trial of sweep {job.sweep_id}, which is still running: "
                "cancel the sweep or wait for it to end, then delete the job"
            )
    store = storage_for(settings)
    try:
        store.delete_tree(job_prefix(job_id))
    except OSError:  # the row is gone already; leftover files are only wasted space
        log.warning("could not remove job %s's files from %s", job_id, store.url, exc_info=True)


def model_file(settings: Settings, job: Job) -> Path:
    """A path on this host of the job's `.safetensors` model (with object storage, a cached
    copy); NotFound until the worker has written one."""
    if job.model_path is None:
        hint = "" if job.status.terminal else "; it is written when the job succeeds"
        raise NotFound(f"job {job.id} has no model (status: {job.status}){hint}")
    try:
        return storage_for(settings).local_path(job.model_path)
    except MissingObject as exc:  # any other storage error is the server's: 503
        raise NotFound(f"the model file of job {job.id} is missing") from exc


def download_name(job: Job) -> str:
    """The job's name made safe as a file name (the id when nothing is left of it)."""
    return re.sub(r"[^\w.-]+", "_", job.name).strip("._") or job.id


def _queue_positions(session: Session, jobs: Sequence[Job]) -> dict[str, int]:
    """1-based places of the queued ones among `jobs`, oldest first per queue, all tenants.

    Each is a count of the queued jobs up to it in its queue: a range of ix_jobs_queue_order,
    so a GET costs as many index entries as there are jobs ahead, never a sort of them all.
    """
    queued = [job.id for job in jobs if job.status == JobStatus.QUEUED]
    if not queued:
        return {}
    ahead = aliased(Job)
    position = (
        select(func.count())
        .where(
            ahead.status == JobStatus.QUEUED,
            ahead.queue == Job.queue,
            tuple_(ahead.created_at, ahead.id) <= tuple_(Job.created_at, Job.id),
        )
        .scalar_subquery()
    )
    still_queued = select(Job.id, position).where(
        Job.id.in_(queued), Job.status == JobStatus.QUEUED
    )
    rows = session.execute(still_queued).all()
    return {job_id: int(count) for job_id, count in rows}


def _by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    with reading(session):
        return session.scalars(
            select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
        ).first()


def _send(queue: JobQueue, job: Job) -> None:
    try:
        queue.send(job.id, job.queue)
    except Exception:  # the row is the truth: the reconciler re-sends queued jobs
        log.warning("job %s: sending to queue %r failed", job.id, job.queue, exc_info=True)
