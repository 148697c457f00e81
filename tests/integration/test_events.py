"""The event stream of a job that a real worker trains, and `/metrics` after it."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.deployments import Deployment
from tests.specs import XOR
from tests.sse import Event, events


def merged_points(received: list[Event]) -> dict[str, dict[int, float]]:
    """Every metric point the stream sent, by series and step (a later one replaces)."""
    points: dict[str, dict[int, float]] = {}
    for got in received:
        if got.event == "metrics":
            for series in got.data["series"]:
                points.setdefault(series["name"], {}).update(
                    zip(series["step"], series["value"], strict=True)
                )
    return points


# PostgreSQL and Redis (the app tests cover SQLite); with `/metrics` of the same run.
@pytest.mark.parametrize("deployment", ["server"], indirect=True)
def test_the_event_stream_follows_a_training_job_to_its_end(deployment: Deployment) -> None:
    client = deployment.client
    job_id = client.submit(XOR)["id"]
    with client.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        received = list(events(response))  # returns only once the server ends the stream

    names = [got.event for got in received]
    statuses = [got.data["status"] for got in received if got.event == "status"]
    assert names[0] == "status" and statuses[0] in ("queued", "running")
    assert statuses[-2:] == ["running", "succeeded"] and names[-1] == "status"
    running = names.index("status", 1) if statuses[0] == "queued" else 0
    assert "progress" in names[running:] and "metrics" in names[running:]
    final = received[-1].data
    assert final == client.job(job_id)  # the whole job, as GET answers it
    assert final["summary"]["accuracy"] == 1.0

    # Together the metrics events hold exactly the job's series, each point once.
    sent = merged_points(received)
    stored: dict[str, Any] = client.metrics(job_id)
    assert sent == {
        name: dict(zip(s["step"], s["value"], strict=True)) for name, s in stored.items()
    }
    counts = sum(
        len(s["step"]) for got in received if got.event == "metrics" for s in got.data["series"]
    )
    assert counts == sum(len(s["step"]) for s in stored.values())

    scraped = client.http.get("/metrics", headers={"Authorization": ""})
    assert scraped.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    assert samples[("backprop_jobs", (("status", "succeeded"),))] == 1
    assert samples[("backprop_job_duration_seconds_count", (("status", "succeeded"),))] == 1
    assert 0 < samples[("backprop_job_duration_seconds_sum", (("status", "succeeded"),))] < 120
    ages = [
        v for (name, _), v in samples.items() if name == "backprop_worker_heartbeat_age_seconds"
    ]
    assert ages and min(ages) < 30
    events_route = (("method", "GET"), ("route", "/v1/jobs/{job_id}/events"), ("status", "200"))
    assert samples[("backprop_http_requests_total", events_route)] == 1
