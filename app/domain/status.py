"""A job's lifecycle as types: the only place its status names are spelled out.

`queued` → `running` → `succeeded` | `failed` | `cancelled`; a running job whose worker
dies goes back to `queued` with attempt + 1 (API.md, "Jobs"). A sweep runs until every
one of its trials (jobs) has ended.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


class SweepStatus(StrEnum):
    """`running` → `succeeded` (every trial ended) | `cancelled` (API.md, "Sweeps")."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"


class ArtifactKind(StrEnum):
    """The durable files a job produces (the `artifacts` table)."""

    CHECKPOINT = "checkpoint"
    MODEL = "model"


# Jobs that hold a place in the system: a worker runs them or will.
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
