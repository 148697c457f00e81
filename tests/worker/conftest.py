"""Worker test fixtures: a migrated SQLite database in a fresh data directory, a tenant,
and helpers to create jobs the way the jobs API does and to run the task directly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.migrate import upgrade_to_head
from app.domain.db.models import Job, Tenant
from app.domain.db.types import new_id, utcnow
from app.queue import RUN_JOB_TASK
from core.spec import parse_spec
from tests.specs import xor_mlp
from worker.celery_app import make_worker_celery


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stray relative paths (e.g. a broker folder) land in the test's directory, and the
    # training process must not depend on being started from the repository.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults (SQLite + filesystem broker) in a fresh data directory."""
    return Settings(data_dir=tmp_path / "data", worker_name="test-worker")


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def tenant_id(factory: sessionmaker[Session]) -> str:
    with transaction(factory) as session:
        tenant = Tenant(name="alice")
        session.add(tenant)
        session.flush()
        return tenant.id


MakeJob = Callable[..., str]


@pytest.fixture
def make_job(factory: sessionmaker[Session], tenant_id: str) -> MakeJob:
    """Insert a queued job as `POST /v1/jobs` does; returns its id."""

    def make(spec: dict[str, Any] | None = None, validate: bool = True, **columns: Any) -> str:
        body = spec or xor_mlp()
        stored = parse_spec(body).model_dump(mode="json") if validate else body
        job = Job(
            id=new_id(),
            tenant_id=tenant_id,
            name="test",
            status="queued",
            attempt=1,
            max_attempts=3,
            dataset=body["dataset"],
            device=body.get("device", "auto"),
            queue="cpu",
            spec=stored,
            created_at=utcnow(),
        )
        for name, value in columns.items():
            setattr(job, name, value)
        with transaction(factory) as session:
            session.add(job)
        return job.id

    return make


@pytest.fixture
def run_task(settings: Settings) -> Callable[[str], str]:
    """Call the registered `backprop.run_job` task directly (no broker, no eager mode)."""
    task = make_worker_celery(settings, ["cpu"]).tasks[RUN_JOB_TASK]
    return lambda job_id: task(job_id)


def read_job(factory: sessionmaker[Session], job_id: str) -> Job:
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
