"""All configuration: one pydantic-settings class, read from `BACKPROP_*` variables.

Only this module reads the environment. Everything else receives a `Settings`.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKPROP_", extra="ignore")

    data_dir: Path = Field(
        Path(".backprop"), description="datasets, checkpoints, models, SQLite, broker"
    )
    database_url: str | None = Field(None, description="default: SQLite in the data directory")
    broker_url: str | None = Field(
        None, description="default: a server-less broker in the data directory"
    )
    storage_url: str | None = Field(
        None,
        description="where datasets, checkpoints and models live: a local path, or "
        "s3://bucket/prefix (default: the data directory)",
    )
    s3_endpoint_url: str | None = Field(
        None, description="the S3-compatible endpoint (MinIO, Ceph, R2); default: AWS"
    )
    storage_cache_bytes: int = Field(
        10 << 30,
        ge=0,
        description="with object storage, the most bytes of stored files each host keeps "
        "copies of (least recently used first out)",
    )
    bootstrap_api_key: str | None = Field(
        None, description="ensured for tenant 'default' at start-up"
    )

    max_upload_bytes: int = Field(1 << 30, description="uploads are cut off beyond this")
    rate_limit: int | None = Field(
        None, ge=1, description="requests per second each API key may make, per API process"
    )
    max_active_jobs: int | None = Field(
        None, ge=1, description="queued + running jobs a tenant may have at once (none: no limit)"
    )
    max_storage_bytes: int | None = Field(
        None, ge=1, description="bytes of datasets + models a tenant may store (none: no limit)"
    )
    max_parameters: int = Field(
        100_000_000, ge=1, description="a job's model may have at most this many parameters"
    )
    max_epochs: int = Field(
        100_000, ge=1, le=100_000, description="a job may train at most this many epochs"
    )
    lease_seconds: float = Field(30.0, description="a running job's lease; renewed by heartbeats")
    heartbeat_seconds: float = Field(5.0, description="how often a running job renews its lease")
    max_attempts: int = Field(
        3, description="attempts before a job whose training process keeps crashing fails"
    )
    max_platform_interruptions: int = Field(
        100,
        ge=0,
        description="re-queues of one job after kills of the platform's making (a training "
        "process killed by a signal, a lost worker) before it fails with worker_lost",
    )
    shutdown_grace_seconds: float = Field(
        20.0,
        ge=0,
        description="on a worker's shutdown, how long a running job gets to checkpoint and "
        "stop before it is killed and handed back",
    )
    reconcile_seconds: float = Field(5.0, description="how often expired leases are re-queued")
    database_retry_seconds: float = Field(
        60.0,
        ge=0,
        description="how long a training process retries its final writes (metrics, the "
        "job's outcome) while the database is unreachable, before it gives the job up to "
        "be re-queued",
    )
    key_cache_seconds: float = Field(
        10.0, description="how long an API process trusts a key it has checked (0: never)"
    )
    worker_name: str = Field(default_factory=socket.gethostname)
    compilation_cache: bool = Field(True, description="keep compiled XLA programs in the data dir")
    warm_spares: int = Field(
        1,
        ge=0,
        le=4,
        description="training processes each worker slot keeps started (JAX imported, device "
        "ready) ahead of its next job, per device kind it serves; 0: start one per job",
    )
    predict_cache_models: int = Field(
        8, ge=1, description="trained models kept loaded and compiled for /predict, per API process"
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'backprop.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id


@lru_cache
def get_settings() -> Settings:
    """The process's settings; tests override the dependency instead of the environment."""
    return Settings()
