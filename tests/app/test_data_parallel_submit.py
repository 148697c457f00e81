"""`resources.devices` at submit: a global batch the devices cannot split evenly is a 422
that names both numbers and the fix; `"all"` waits for the worker's count."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.domain.db.engine import transaction
from app.domain.db.models import Worker
from app.domain.db.types import utcnow
from tests.specs import IRIS_MLP  # builtin:iris: 150 examples

Headers = dict[str, str]


def _spec(devices: Any, **training: Any) -> dict[str, Any]:
    spec = copy.deepcopy(IRIS_MLP)
    spec["training"] = {"epochs": 1, **training}
    spec["resources"] = {"devices": devices}
    return spec


@pytest.mark.parametrize(
    ("spec", "loc", "parts"),
    [
        (
            _spec(4, batch_size=30),
            ["body", "training", "batch_size"],
            ["a batch of 30 examples", "over 4 devices", "e.g. 28 or 32", "resources.devices"],
        ),
        (
            _spec(8, batch_size=4),
            ["body", "training", "batch_size"],
            ["a batch of 4 examples", "over 8 devices", "e.g. 8,"],
        ),
        (  # the whole training set: 150 examples less a 10% hold-out
            {**_spec(4, batch_size="full"), "validation": {"split": 0.1}},
            ["body", "training", "batch_size"],
            ["a batch of 135 examples (batch_size 'full'", "over 4 devices", "132 or 136"],
        ),
        (
            _spec(0),
            ["body", "resources", "devices"],
            ['a whole number from 1 to 64, or "all"', "got 0"],
        ),
        (_spec(65), ["body", "resources", "devices"], ["from 1 to 64", "got 65"]),
        (_spec("most"), ["body", "resources", "devices"], ["got 'most'"]),
    ],
)
def test_devices_that_cannot_run_the_batch_are_a_422_with_their_loc(
    client: TestClient, alice: Headers, spec: dict[str, Any], loc: list[Any], parts: list[str]
) -> None:
    answer = client.post("/v1/jobs", json=spec, headers=alice)
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == loc
    for part in parts:
        assert part in problem["msg"], problem["msg"]
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []


@pytest.mark.parametrize(
    "spec",
    [
        _spec(4, batch_size=32),
        _spec(2, batch_size="full"),  # all 150 examples
        _spec(2, batch_size=1000),  # more than the data set: all 150 again
        _spec("all", batch_size=30),  # the worker's own count decides
        _spec(1, batch_size=7),
    ],
)
def test_a_batch_the_devices_split_is_accepted(
    client: TestClient, alice: Headers, spec: dict[str, Any]
) -> None:
    answer = client.post("/v1/jobs", json=spec, headers=alice)
    assert answer.status_code == 201, answer.text
    assert answer.json()["spec"]["resources"] == spec["resources"]


def test_a_job_without_resources_asks_for_one_device(client: TestClient, alice: Headers) -> None:
    answer = client.post("/v1/jobs", json=IRIS_MLP, headers=alice)
    assert answer.status_code == 201, answer.text
    assert answer.json()["spec"]["resources"] == {"devices": 1}


def test_a_sweep_trial_whose_batch_the_devices_do_not_split_is_refused(
    client: TestClient, alice: Headers
) -> None:
    body = {
        "spec": _spec(4, batch_size=32),
        "parameters": {"training.batch_size": {"values": [32, 30]}},
        "metric": {"name": "loss"},
        "max_trials": 2,
    }
    answer = client.post("/v1/sweeps", json=body, headers=alice)
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["body", "parameters", "training.batch_size"]
    assert "does not split evenly over 4 devices" in problem["msg"]


def _add_worker(app: FastAPI, name: str, devices: int, seconds_ago: float = 0.0) -> None:
    with transaction(app.state.sessionmaker) as session:
        seen = utcnow() - timedelta(seconds=seconds_ago)
        session.add(Worker(name=name, queues=["cpu"], devices=devices, last_seen=seen))


def test_a_job_asking_for_more_devices_than_any_worker_has_says_so(
    app: FastAPI, client: TestClient, alice: Headers
) -> None:
    _add_worker(app, "two", devices=2)
    _add_worker(app, "gone", devices=8, seconds_ago=3600)  # not live: does not count
    spec = {**_spec(4, batch_size=32), "device": "cpu"}
    job = client.post("/v1/jobs", json=spec, headers=alice).json()
    assert job["queue_position"] == 1 and job["waiting_for"] == "4 devices"
    listed = client.get("/v1/jobs", headers=alice).json()["data"]
    assert [j["waiting_for"] for j in listed] == ["4 devices"]

    _add_worker(app, "four", devices=4)
    job = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert job["queue_position"] == 1 and job["waiting_for"] is None


def test_jobs_that_fit_wait_for_nothing(app: FastAPI, client: TestClient, alice: Headers) -> None:
    for devices in (1, "all"):
        spec = {**_spec(devices, batch_size=30), "device": "cpu"}
        job = client.post("/v1/jobs", json=spec, headers=alice).json()
        assert job["waiting_for"] is None
