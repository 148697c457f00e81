"""`GET /metrics`: parsed with prometheus_client's own parsers, values checked against rows
written as workers would leave them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.domain.db.engine import transaction
from app.domain.db.models import Job, Metric, Tenant, Worker
from app.domain.db.types import utcnow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)  # no API key: API.md
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = text_string_to_metric_families(response.text)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def add_jobs(app: FastAPI, *jobs: dict[str, Any]) -> list[str]:
    with transaction(app.state.sessionmaker) as session:
        tenant = session.scalars(select(Tenant.id).where(Tenant.name == "alice")).one()
        rows = [
            Job(
                tenant_id=tenant,
                name="job",
                dataset="builtin:xor",
                device="cpu",
                spec={},
                **{"queue": "cpu", **fields},
            )
            for fields in jobs
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def test_the_service_state_comes_from_the_database(
    client: TestClient, app: FastAPI, alice: dict[str, str]
) -> None:
    now = utcnow()
    ran = {"started_at": now - timedelta(seconds=100)}
    add_jobs(
        app,
        {"status": "queued"},
        {"status": "queued", "created_at": now - timedelta(seconds=60)},
        {"status": "queued", "queue": "gpu"},
        {
            "status": "succeeded",
            **ran,
            "finished_at": ran["started_at"] + timedelta(seconds=3),
            **{"queued_seconds": 0.03, "compile_seconds": 0.4, "total_seconds": 3.2},
        },
        {
            "status": "succeeded",
            **ran,
            "finished_at": ran["started_at"] + timedelta(seconds=100),
            **{"queued_seconds": 0.2, "compile_seconds": 2.0, "total_seconds": 100.5},
        },
        {"status": "failed", **ran, "finished_at": ran["started_at"] + timedelta(seconds=20)},
        {"status": "cancelled", "finished_at": now},  # cancelled while queued: never ran
    )
    running, other_running = add_jobs(
        app,
        {"status": "running", "worker": "w-1", **ran},
        {"status": "running", "worker": "w-2", "queue": "gpu", **ran},
    )
    with transaction(app.state.sessionmaker) as session:
        session.add_all(
            [
                Metric(job_id=running, name="samples_per_second", step=10, epoch=0, value=900.0),
                Metric(job_id=running, name="samples_per_second", step=20, epoch=1, value=1500.0),
                Metric(job_id=running, name="loss", step=30, epoch=1, value=0.5),
                Worker(name="w-1", queues=["cpu"], running_job_id=running, last_seen=now),
                Worker(name="w-2", queues=["gpu"], last_seen=now - timedelta(seconds=40)),
                Worker(name="gone", queues=["cpu"], last_seen=now - timedelta(days=3)),
            ]
        )

    samples = scrape(client)

    assert value(samples, "backprop_database_up") == 1
    expected = {"queued": 3, "running": 2, "succeeded": 2, "failed": 1, "cancelled": 1}
    for status, count in expected.items():
        assert value(samples, "backprop_jobs", status=status) == count
    assert value(samples, "backprop_queue_depth", queue="cpu") == 2
    assert value(samples, "backprop_queue_depth", queue="gpu") == 1
    assert 60 <= value(samples, "backprop_queue_oldest_wait_seconds", queue="cpu") < 90

    duration = "backprop_job_duration_seconds"
    assert value(samples, f"{duration}_bucket", status="succeeded", le="1.0") == 0
    assert value(samples, f"{duration}_bucket", status="succeeded", le="5.0") == 1
    assert value(samples, f"{duration}_bucket", status="succeeded", le="60.0") == 1
    assert value(samples, f"{duration}_bucket", status="succeeded", le="120.0") == 2
    assert value(samples, f"{duration}_bucket", status="succeeded", le="+Inf") == 2
    assert value(samples, f"{duration}_count", status="succeeded") == 2
    assert abs(value(samples, f"{duration}_sum", status="succeeded") - 103) < 1e-3
    assert value(samples, f"{duration}_count", status="failed") == 1
    assert value(samples, f"{duration}_count", status="cancelled") == 0

    phase = "backprop_job_phase_seconds"
    assert value(samples, f"{phase}_bucket", phase="queued", le="0.05") == 1
    assert value(samples, f"{phase}_bucket", phase="queued", le="0.25") == 2
    assert value(samples, f"{phase}_bucket", phase="compile", le="0.5") == 1
    assert value(samples, f"{phase}_bucket", phase="compile", le="2.5") == 2
    assert value(samples, f"{phase}_count", phase="total") == 2  # jobs that have it
    assert abs(value(samples, f"{phase}_sum", phase="total") - 103.7) < 1e-6
    assert value(samples, f"{phase}_count", phase="training") == 0

    assert value(samples, "backprop_worker_busy", worker="w-1") == 1
    assert value(samples, "backprop_worker_busy", worker="w-2") == 0
    seen = value(samples, "backprop_worker_last_seen_timestamp_seconds", worker="w-2")
    assert abs(seen - (now - timedelta(seconds=40)).timestamp()) < 1e-3
    assert 40 <= value(samples, "backprop_worker_heartbeat_age_seconds", worker="w-2") < 70
    assert not any(dict(labels).get("worker") == "gone" for _, labels in samples)

    # The newest epoch's throughput of each running job that has finished an epoch.
    throughput = "backprop_training_samples_per_second"
    assert value(samples, throughput, job_id=running, queue="cpu", worker="w-1") == 1500.0
    assert not any(dict(labels).get("job_id") == other_running for _, labels in samples)


def test_requests_are_counted_by_route_template(client: TestClient, alice: dict[str, str]) -> None:
    job_id = "5f0c6a1e-4d43-4a8e-9a53-2f6f0e8f1c2d"
    for _ in range(3):
        assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 404
    assert client.get("/v1/jobs", headers=alice).status_code == 200
    assert client.get("/v1/jobs").status_code == 401
    assert client.get(f"/no/such/{job_id}").status_code == 404

    samples = scrape(client)

    requests = "backprop_http_requests_total"
    route = "/v1/jobs/{job_id}"
    assert value(samples, requests, method="GET", route=route, status="404") == 3
    assert value(samples, requests, method="GET", route="/v1/jobs", status="200") == 1
    assert value(samples, requests, method="GET", route="/v1/jobs", status="401") == 1
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    latency = "backprop_http_request_duration_seconds"
    assert value(samples, f"{latency}_count", method="GET", route=route) == 3
    assert 0 < value(samples, f"{latency}_sum", method="GET", route=route) < 30
    # Raw paths never become labels: the series stay bounded whatever clients request.
    assert not any(job_id in str(labels) for _, labels in samples)


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    names = {family.name for family in openmetrics_families(response.text)}
    assert {"backprop_jobs", "backprop_queue_depth", "backprop_job_duration_seconds"} <= names
