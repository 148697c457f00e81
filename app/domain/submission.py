"""How a validated JobSpec becomes a queued job row: its queue, its fields. Used by
`POST /v1/jobs` and by the sweep controller (a trial is an ordinary job)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import dataset_store
from app.domain.db.models import Job, Worker
from app.domain.db.types import new_id, utcnow
from app.domain.status import JobStatus
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
        "min_devices": spec.resources.fixed_devices or 1,
        "spec": spec.model_dump(mode="json"),
        "created_at": utcnow(),
    }
    return Job(**{**values, **fields})


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


# Data parallel (`resources.devices`): a job needs a worker with `min_devices` devices
# (`app.domain.leases.fair_next_job` claims only such jobs).
WORKER_FRESH_SECONDS = GPU_WORKER_FRESH_SECONDS  # a worker row this fresh is alive


def devices_waiting_for(session: Session, jobs: Sequence[Job]) -> dict[str, str]:
    """`waiting_for` of each queued job in `jobs` that asks for more devices than every
    live worker of its queue has: `{job id: "4 devices"}`; jobs that fit are left out.
    Queries the workers only when some job asks for more than one device."""
    wanting = {
        job.id: (job.queue, job.min_devices)
        for job in jobs
        if job.status == JobStatus.QUEUED and job.min_devices > 1
    }
    if not wanting:
        return {}
    fresh_since = utcnow() - timedelta(seconds=WORKER_FRESH_SECONDS)
    most: dict[str, int] = {}
    rows = session.execute(
        select(Worker.queues, Worker.devices).where(Worker.last_seen >= fresh_since)
    )
    for queues, devices in rows:
        for queue in queues or []:
            most[queue] = max(most.get(queue, 0), int(devices or 1))
    return {
        job_id: f"{devices} devices"
        for job_id, (queue, devices) in wanting.items()
        if int(devices) > most.get(queue or "", 0)
    }
