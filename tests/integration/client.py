"""How the integration tests see a running deployment: its REST API (as a user does) and,
for what the API does not show, its database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, func, select

from app.domain.db.models import Job, Metric

TERMINAL = ("succeeded", "failed", "cancelled")


class BackpropClient:
    """`httpx` against `/v1` with a tenant's key; each call asserts the documented status."""

    def __init__(self, base_url: str, api_key: str):
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        assert job["status"] == "queued"
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for_job(
        self, job_id: str, until: str, timeout: float, *, interval: float = 0.1
    ) -> dict[str, Any]:
        """Poll until the job is `until`; fail at once on another terminal status."""
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while job["status"] != until:
            if job["status"] in TERMINAL:
                raise AssertionError(f"job {job_id} ended {job['status']}: {job['error']}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still {job['status']} after {timeout:.0f} s "
                    f"(attempt {job['attempt']}, progress {job['progress']})"
                )
            time.sleep(interval)
            job = self.job(job_id)
        return job

    def wait_for_progress(self, job_id: str, epoch: int, timeout: float) -> dict[str, Any]:
        """Poll until the running job reports `progress.epoch >= epoch` (epochs done)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                raise AssertionError(f"job {job_id} ended {job['status']} before epoch {epoch}")
            progress = job["progress"] or {}
            if job["status"] == "running" and progress.get("epoch", 0) >= epoch:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not at epoch {epoch} after {timeout} s: {job}")
            time.sleep(0.05)

    def cancel(self, job_id: str) -> httpx.Response:
        return self.http.post(f"/v1/jobs/{job_id}/cancel")

    def metrics(self, job_id: str) -> dict[str, dict[str, list[Any]]]:
        """`{series name: {"step": [...], "epoch": [...], "value": [...], "time": [...]}}`."""
        response = self.http.get(f"/v1/jobs/{job_id}/metrics")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["job_id"] == job_id
        return {series.pop("name"): series for series in body["series"]}

    def model(self, job_id: str) -> bytes:
        response = self.http.get(f"/v1/jobs/{job_id}/model")
        assert response.status_code == 200, response.text
        return response.content


@dataclass(frozen=True)
class MetricRow:
    name: str
    step: int
    epoch: int
    time: Any  # an aware datetime


class JobStore:
    """Read-only looks at the deployment's database (what the API does not expose)."""

    def __init__(self, database_url: str):
        # Pre-ping: a server restarted by a chaos test leaves dropped connections in the pool.
        self.engine: Engine = create_engine(database_url, pool_pre_ping=True)

    def close(self) -> None:
        self.engine.dispose()

    def job(self, job_id: str) -> dict[str, Any]:
        with self.engine.connect() as connection:
            row = connection.execute(select(Job.__table__).where(Job.id == job_id)).one()
        return dict(row._mapping)

    def trials(self, sweep_id: str) -> list[tuple[int, str]]:
        """(trial number, status) of a sweep's trial jobs, by number."""
        query = (
            select(Job.trial_number, Job.status)
            .where(Job.sweep_id == sweep_id)
            .order_by(Job.trial_number)
        )
        with self.engine.connect() as connection:
            return [(int(number), str(status)) for number, status in connection.execute(query)]

    def metric_counts(self, job_id: str) -> tuple[int, int]:
        """(rows, distinct (name, step) pairs) of the job's metrics."""
        mine = Metric.job_id == job_id
        pairs = select(Metric.name, Metric.step).where(mine).distinct().subquery()
        with self.engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(Metric).where(mine))
            distinct = connection.execute(select(func.count()).select_from(pairs))
            return rows.scalar_one(), distinct.scalar_one()

    def metric_rows(self, job_id: str) -> list[MetricRow]:
        query = (
            select(Metric.name, Metric.step, Metric.epoch, Metric.time)
            .where(Metric.job_id == job_id)
            .order_by(Metric.name, Metric.step)
        )
        with self.engine.connect() as connection:
            return [MetricRow(*row) for row in connection.execute(query)]
