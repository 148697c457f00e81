"""What the jobs API shows: the Job body of API.md, job lists and metric series."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.domain.status import JobStatus
from app.domain.timings import JobTimings
from app.domain.values import JobError, JobProgress, TrialOfJob
from app.schemas.common import Page, PageQuery
from core.spec import JobSpec
from core.spec.examples import DIGITS_CNN

if TYPE_CHECKING:
    from app.domain.db.models import Job


_JOB_EXAMPLE: dict[str, Any] = {
    "id": "5f0c6a1e-4d43-4a8e-9a53-2f6f0e8f1c2d",
    "name": "digits-cnn",
    "status": JobStatus.RUNNING,
    "attempt": 1,
    "platform_interruptions": 0,
    "dataset": "builtin:digits",
    "device": "cpu",
    "worker": "host-1",
    "created_at": "2025-01-01T12:00:00Z",
    "started_at": "2025-01-01T12:00:01Z",
    "finished_at": None,
    "queue_position": None,
    "waiting_for": None,
    "progress": {"epoch": 3, "epochs": 20, "step": 72, "steps": 480, "fraction": 0.15},
    "eta_seconds": 12.5,
    "summary": None,
    "error": None,
    "timings": {
        "queued": 0.04,
        "startup": 0.21,
        "compile": 0.35,
        "training": None,
        "finalizing": None,
        "total": None,
    },
    "spec": DIGITS_CNN,
}


class JobPublic(BaseModel):
    """A training job (API.md, "Job body"): the one builder of the body that routes, event
    streams and the dashboard all show (`JobPublic.of`)."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_JOB_EXAMPLE]})

    id: str
    name: str
    status: JobStatus
    attempt: int = Field(
        description="1, plus one for every crash of the job's own making that re-queued it "
        "(its training process exited without reporting a result); `failed` with "
        "`worker_lost` after `max_attempts` (default 3)"
    )
    platform_interruptions: int = Field(
        0,
        description="times the platform interrupted the job and re-queued it with the same "
        "attempt: its training process killed from outside (SIGKILL, the OOM killer), its "
        "worker lost (an expired lease); a worker's clean shutdown, which hands the job back "
        "after a checkpoint, does not count. A generous cap "
        "(BACKPROP_MAX_PLATFORM_INTERRUPTIONS, default 100) still ends a job that keeps "
        "being killed",
    )
    dataset: str = Field(description='"builtin:<name>" or an uploaded dataset id')
    device: Literal["auto", "cpu", "gpu"] = Field(
        description="the spec's `device` until a worker claims the job, then the device it runs on"
    )
    worker: str | None = Field(description="the worker running (or that ran) the job")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = Field(
        None,
        description="1-based place among the queued jobs of its queue (all tenants, oldest "
        "first); null unless queued",
    )
    waiting_for: str | None = Field(
        None,
        description='what a queued job waits for beyond its turn: "4 devices" while it asks '
        "for more devices (`resources.devices`) than any live worker of its queue has; "
        "null otherwise",
    )
    progress: JobProgress | None
    eta_seconds: float | None
    summary: dict[str, Any] | None = Field(
        description="final metrics: loss, accuracy, val_*, best_epoch, samples_per_second, "
        "the device it trained on (`cpu`, `gpu: <name>`)…"
    )
    error: JobError | None
    timings: JobTimings = Field(
        description="seconds spent in each phase of the latest attempt, null until reached: "
        "queued (created or re-queued → claimed), startup (→ data on the device), compile "
        "(→ first program ready), training (→ last step), finalizing (→ terminal status), "
        "total (created or re-queued → terminal)"
    )
    spec: JobSpec = Field(description="the submitted spec, with defaults filled in")
    sweep_id: str | None = Field(None, description="the sweep this job is a trial of")
    trial: TrialOfJob | None = Field(None, description="its trial number and sampled values")

    @classmethod
    def of(
        cls, job: Job, queue_position: int | None = None, waiting_for: str | None = None
    ) -> JobPublic:
        """The body of a job row; `queue_position` and `waiting_for` are not columns (see
        services.jobs and `app.domain.submission.devices_waiting_for`)."""
        public = cls.model_validate(job)
        public.queue_position = queue_position
        public.waiting_for = waiting_for
        return public


class JobsPublic(Page[JobPublic]):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"data": [_JOB_EXAMPLE], "next_cursor": None}]}
    )


class JobsQuery(PageQuery):
    """`GET /v1/jobs` filters, with `limit` and `cursor`."""

    status: JobStatus | None = Field(None, description="only jobs in this status")
    name: str | None = Field(None, description="only jobs with exactly this name")
    sweep: str | None = Field(None, description="only the trials of this sweep")


class MetricSeriesPublic(BaseModel):
    """One metric as parallel arrays, ordered by step."""

    name: str
    step: list[int]
    epoch: list[int]
    value: list[float | None] = Field(description="null where the value was not finite")
    time: list[datetime]


class JobMetricsPublic(BaseModel):
    """A job's metric series, sorted by name."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": _JOB_EXAMPLE["id"],
                    "series": [
                        {
                            "name": "loss",
                            "step": [10, 20],
                            "epoch": [0, 0],
                            "value": [2.1, 1.7],
                            "time": ["2025-01-01T12:00:02Z", "2025-01-01T12:00:03Z"],
                        }
                    ],
                }
            ]
        }
    )

    job_id: str
    series: list[MetricSeriesPublic]
