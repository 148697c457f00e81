"""A tenant's quotas (API.md "Quotas and limits"), checked inside the transaction that
would pass them: active jobs (`BACKPROP_MAX_ACTIVE_JOBS`) and stored bytes
(`BACKPROP_MAX_STORAGE_BYTES`: its datasets plus its jobs' models). Over one: QuotaExceeded,
a 429 whose message names the setting and says what frees room."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.db.models import Artifact, Dataset, Job, Tenant
from app.domain.errors import QuotaExceeded
from app.domain.status import ACTIVE_STATUSES, ArtifactKind

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
    _lock_tenant(session, tenant_id)
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


# Freeing storage takes the user's action (a delete), so retrying sooner is pointless.
STORAGE_RETRY_SECONDS = 60


def storage_used(session: Session, tenant_id: str) -> int:
    """Bytes a tenant stores: its datasets' uploads and its jobs' exported models."""
    datasets = select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
        Dataset.tenant_id == tenant_id
    )
    models = (
        select(func.coalesce(func.sum(Artifact.size_bytes), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.tenant_id == tenant_id, Artifact.kind == ArtifactKind.MODEL)
    )
    return int(session.scalar(datasets) or 0) + int(session.scalar(models) or 0)


def storage_room(session: Session, settings: Settings, tenant_id: str) -> int | None:
    """Bytes the tenant may still store (None: no quota); raises QuotaExceeded at 0."""
    limit = settings.max_storage_bytes
    if limit is None:
        return None
    used = storage_used(session, tenant_id)
    if used >= limit:
        raise storage_exceeded(used, limit)
    return limit - used


def check_storage_quota(session: Session, settings: Settings, tenant_id: str, adding: int) -> None:
    """Inside the transaction that stores `adding` more bytes (0: a job, whose model is
    still to come, so only a tenant already at its quota is refused)."""
    if settings.max_storage_bytes is None:
        return
    _lock_tenant(session, tenant_id)
    used = storage_used(session, tenant_id)
    if used + adding > settings.max_storage_bytes or used >= settings.max_storage_bytes:
        more = f"; this would add {adding:,}" if adding else ""
        raise storage_exceeded(used, settings.max_storage_bytes, more)


def storage_exceeded(used: int, limit: int, more: str = "") -> QuotaExceeded:
    return QuotaExceeded(
        f"this tenant stores {used:,} bytes of datasets and models{more}, and its quota "
        f"BACKPROP_MAX_STORAGE_BYTES is {limit:,}: delete datasets (DELETE /v1/datasets/{{id}}) "
        "or finished jobs (DELETE /v1/jobs/{id}) to make room",
        STORAGE_RETRY_SECONDS,
    )


def _lock_tenant(session: Session, tenant_id: str) -> None:
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
