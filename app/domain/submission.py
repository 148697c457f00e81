"""How a validated JobSpec becomes a queued job row: its queue, its fields. Used by
`POST /v1/jobs` and by the sweep controller (a trial is an ordinary job)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import dataset_store
from app.domain.db.models import Job, Tenant, Worker
from app.domain.db.types import new_id, utcnow
from app.domain.errors import QuotaExceeded
from app.domain.status import ACTIVE_STATUSES, JobStatus
from core.spec import JobSpec

# A GPU worker counts as available for `device: auto` when it reported this recently.
GPU_WORKER_FRESH_SECONDS = 30
ROUTING_RULE = (
    "`device: gpu` goes to the `gpu` queue (it waits for a GPU worker), `cpu` to the `cpu` "
    "queue. `auto` goes to `gpu` only when more GPU workers are idle (seen in the last "
    f"{GPU_WORKER_FRESH_SECONDS} s, running nothing) than `gpu` jobs are already queued; "
    "otherwise to `cpu`. The choice is made once, at submission."
)


def new_job(
    settings: Settings, tenant_id: str, spec: JobSpec, *, default_name: str, **fields: Any
) -> Job:
    """A queued job row for `spec` (not yet added to a session); `fields` add to or
    override its columns (an idempotency key, a sweep's trial number…)."""
    job_id = new_id()
    values: dict[str, Any] = {
        "id": job_id,
        "tenant_id": tenant_id,
        "name": spec.name or f"{default_name}-{job_id[:8]}",
        "status": JobStatus.QUEUED,
        "attempt": 1,
        "max_attempts": settings.max_attempts,
        "dataset": spec.dataset,
        "dataset_id": _uploaded_id(spec.dataset),
        "validation_dataset_id": _uploaded_id(spec.validation.dataset if spec.validation else None),
        "device": spec.device,
        "spec": spec.model_dump(mode="json"),
        "created_at": utcnow(),
    }
    return Job(**{**values, **fields})


# When a tenant at its active-jobs quota may try again: small jobs end within seconds.
QUOTA_RETRY_SECONDS = 10


def check_active_quota(session: Session, settings: Settings, tenant_id: str, adding: int) -> int:
    """Inside the transaction that adds `adding` queued jobs for `tenant_id`: raise
    QuotaExceeded if that would pass BACKPROP_MAX_ACTIVE_JOBS; returns how many more the
    tenant may add (a large number without a quota).

    The tenant's row is locked first (PostgreSQL; SQLite serialises writers anyway), so
    two submissions at once cannot both take the last place."""
    limit = settings.max_active_jobs
    if limit is None:
        return 1 << 30
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
    )
    room = limit - int(active or 0)
    if adding > room:
        raise QuotaExceeded(
            f"this tenant has {active} active (queued or running) jobs and its quota "
            f"BACKPROP_MAX_ACTIVE_JOBS is {limit}: wait for one to end, or cancel one",
            QUOTA_RETRY_SECONDS,
        )
    return room


def route_device(session: Session, device: str) -> str:
    """The queue (`cpu` | `gpu`) for a spec's `device`; see `ROUTING_RULE`."""
    if device != "auto":
        return device
    fresh_since = utcnow() - timedelta(seconds=GPU_WORKER_FRESH_SECONDS)
    idle_gpu_workers = session.scalar(
        select(func.count())
        .select_from(Worker)
        .where(
            Worker.has_gpu.is_(True),
            Worker.last_seen >= fresh_since,
            Worker.running_job_id.is_(None),
        )
    )
    waiting_gpu_jobs = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.queue == "gpu", Job.status == JobStatus.QUEUED)
    )
    return "gpu" if (idle_gpu_workers or 0) > (waiting_gpu_jobs or 0) else "cpu"


def _uploaded_id(ref: str | None) -> str | None:
    return None if ref is None or ref.startswith(dataset_store.BUILTIN_PREFIX) else ref
