"""The schema. Alembic migrations (migrations/) are the only way it is created."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.domain.db.types import EnumText, ModelJSON, UTCDateTime, new_id, utcnow
from app.domain.status import ArtifactKind, JobStatus, SweepStatus
from app.domain.timings import JobTimings
from app.domain.values import JobError, JobProgress, TrialOfJob

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """Keys are stored as SHA-256 hashes; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters: its row is found by them (then the hash is compared in
    # constant time), and listings show them to tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Written at most once a minute per key and process (app.auth), for `backprop keys list`.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    num_examples: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    target_shape: Mapped[list[int]] = mapped_column(JSON)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    class_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(Text)  # converted arrays, relative to data_dir
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sweep(Base):
    """A hyperparameter search (API.md, "Sweeps"); its trials are jobs with `sweep_id`.

    `definition` is the validated sweep body (`app.domain.sweeps.definition.SweepDefinition`),
    the base spec with its defaults filled in. What the samplers and the stop rules need
    to resume after any restart is in this row and the trials' rows, nowhere else.
    """

    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[SweepStatus] = mapped_column(
        EnumText(SweepStatus, 16), default=SweepStatus.RUNNING, index=True
    )
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    """The source of truth for a job; the broker only wakes a worker up."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # Queue order: a queued job's position counts the queued jobs ahead of it.
        Index("ix_jobs_queue_order", "status", "queue", "created_at", "id"),
        # Fair share: when each tenant was last served (app.domain.leases.fair_next_job).
        Index("ix_jobs_tenant_claimed", "tenant_id", "claimed_at"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        # A sweep's trial numbers: a second controller making the same trial fails here.
        UniqueConstraint("sweep_id", "trial_number", name="uq_jobs_sweep_trial"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(EnumText(JobStatus, 16), default=JobStatus.QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # Times the platform, not the job, stopped it (a worker killed or lost, a restart):
    # these re-queue it without using up `max_attempts`, which counts the job's own crashes.
    platform_interruptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    dataset: Mapped[str] = mapped_column(String(64))  # "builtin:<name>" or a dataset id
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    validation_dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    device: Mapped[str] = mapped_column(String(8))  # the spec's request: auto | cpu | gpu
    # The devices a worker needs to claim it: `resources.devices`, 1 for "all" (any worker).
    min_devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    queue: Mapped[str] = mapped_column(String(16))  # where it was routed: cpu | gpu
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[JobProgress | None] = mapped_column(ModelJSON(JobProgress), nullable=True)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[JobError | None] = mapped_column(ModelJSON(JobError), nullable=True)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the job's message was last sent (None: at creation). The reconciler re-sends a
    # job queued for long while a worker of its queue sits idle: that message was lost.
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # latest
    # A sweep's trial: its number, the sampled values by parameter path, and what the
    # sampler noted about it (Optuna's system attributes, e.g. a grid point's id).
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=True
    )
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trial_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    trial_sampler: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Seconds per phase of the latest attempt (app.domain.timings); null until reached.
    queued_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    startup_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    compile_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    training_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    finalizing_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def timings(self) -> JobTimings:
        return JobTimings.of(self)

    @property
    def trial(self) -> TrialOfJob | None:
        if self.sweep_id is None or self.trial_number is None:
            return None
        return TrialOfJob(number=self.trial_number, params=self.trial_params or {})


class Metric(Base):
    """One point of a series; rewriting a step after a resume replaces, never duplicates."""

    __tablename__ = "metrics"
    # Event streams poll a job's points by the time they were (re)written.
    __table_args__ = (Index("ix_metrics_job_time", "job_id", "time"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Artifact(Base):
    """A durable file a job produced: a checkpoint or the exported model."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ArtifactKind] = mapped_column(EnumText(ArtifactKind, 16))
    path: Mapped[str] = mapped_column(Text)  # relative to data_dir
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A worker process seen recently: what it consumes, whether it has a GPU, what it runs.

    Used to route `device: auto` jobs to an idle GPU worker, and for `/readyz`-style views.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list[str]] = mapped_column(JSON)
    has_gpu: Mapped[bool] = mapped_column(Boolean, default=False)
    devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # local, usable
    running_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Since when it has run nothing (None while it runs a job): a worker idle for long next
    # to a long-queued job of its queue means that job's message was lost.
    idle_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
