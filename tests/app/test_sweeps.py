"""The sweeps API in process (SQLite, the filesystem broker, no worker): validation with
`loc`s into the sweep body, the first trials, the controller's budget, cancel, tenants."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.domain.db.engine import transaction
from app.domain.db.models import Job
from app.domain.status import JobStatus
from app.domain.sweeps import controller
from tests.specs import mlp

Headers = dict[str, str]


def iris_spec(**training: Any) -> dict[str, Any]:
    return mlp(
        "builtin:iris",
        [8, 3],
        metrics=["accuracy"],
        validation={"split": 0.2},
        training={"epochs": 6, "batch_size": 16, **training},
        device="cpu",
    )


def sweep_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "iris-lr",
        "spec": iris_spec(),
        "parameters": {
            "optimizer.learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 0.1},
            "model.layers[0].units": {"values": [4, 8, 16]},
        },
        "method": "random",
        "metric": {"name": "val_accuracy", "goal": "maximize"},
        "max_trials": 5,
        "max_concurrent": 2,
        "early_termination": {"type": "asha", "min_epochs": 1, "reduction_factor": 3},
        "seed": 3,
        **fields,
    }


def trials_of(app: FastAPI, sweep_id: str) -> list[Job]:
    with transaction(app.state.sessionmaker) as session:
        return list(
            session.scalars(
                select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_number)
            ).all()
        )


def finish_active(app: FastAPI, value: float = 0.9) -> None:
    """What workers would do: every queued or running trial succeeds."""
    with transaction(app.state.sessionmaker) as session:
        session.execute(
            update(Job)
            .where(Job.sweep_id.is_not(None), Job.status.in_(["queued", "running"]))
            .values(
                status=JobStatus.SUCCEEDED,
                summary={"val_accuracy": value, "stop_reason": "completed", "epochs_completed": 6},
            )
        )


def advance(app: FastAPI, sweep_id: str) -> list[str]:
    settings = app.state.settings
    return controller.advance(app.state.sessionmaker, sweep_id, lambda *_: None, settings)


def test_a_sweep_starts_max_concurrent_trials_as_ordinary_jobs(
    client: TestClient, alice: Headers, app: FastAPI
) -> None:
    created = client.post("/v1/sweeps", json=sweep_body(), headers=alice)
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert sweep["status"] == "running"
    assert sweep["trials"] == {
        "total": 2,
        "queued": 2,
        "running": 0,
        "succeeded": 0,
        "pruned": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert (sweep["max_trials"], sweep["max_concurrent"], sweep["best"]) == (5, 2, None)
    assert sweep["spec"]["training"]["shuffle"] is True  # defaults filled in

    listed = client.get(f"/v1/jobs?sweep={sweep['id']}", headers=alice).json()["data"]
    assert sorted(job["trial"]["number"] for job in listed) == [0, 1]
    for job in listed:
        assert job["sweep_id"] == sweep["id"] and job["status"] == "queued"
        params = job["trial"]["params"]
        assert 1e-3 <= params["optimizer.learning_rate"] <= 0.1
        # A number at a path that holds a schedule is the constant-rate shorthand.
        rate = {"type": "constant", "value": params["optimizer.learning_rate"]}
        assert job["spec"]["optimizer"]["learning_rate"] == rate
        assert job["spec"]["model"]["layers"][0]["units"] == params["model.layers[0].units"]
        assert job["name"] == f"iris-lr-{job['trial']['number']}"

    trials = client.get(f"/v1/sweeps/{sweep['id']}/trials", headers=alice).json()
    assert [t["number"] for t in trials["data"]] == [0, 1]
    assert all(t["value"] is None and t["epochs"] == 0 for t in trials["data"])


def test_the_controller_keeps_max_concurrent_and_makes_exactly_max_trials(
    client: TestClient, alice: Headers, app: FastAPI
) -> None:
    sweep_id = client.post("/v1/sweeps", json=sweep_body(), headers=alice).json()["id"]
    assert advance(app, sweep_id) == []  # already two active: nothing to do
    while True:
        finish_active(app)
        made = advance(app, sweep_id)
        active = [t for t in trials_of(app, sweep_id) if t.status == JobStatus.QUEUED]
        assert len(active) <= 2
        if not made:
            break
    trials = trials_of(app, sweep_id)
    assert [t.trial_number for t in trials] == [0, 1, 2, 3, 4]
    body = client.get(f"/v1/sweeps/{sweep_id}", headers=alice).json()
    assert body["status"] == "succeeded" and body["finished_at"] is not None
    assert body["trials"]["succeeded"] == 5 and body["epochs_used"] == 30
    assert body["best"]["value"] == 0.9 and body["best"]["number"] == 0
    assert advance(app, sweep_id) == []  # a finished sweep makes nothing more


def test_two_controllers_at_once_never_pass_the_budget(
    client: TestClient, alice: Headers, app: FastAPI
) -> None:
    sweep_id = client.post(
        "/v1/sweeps", json=sweep_body(max_trials=6, max_concurrent=3), headers=alice
    ).json()["id"]
    for _ in range(4):
        finish_active(app)
        threads = [threading.Thread(target=advance, args=(app, sweep_id)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        active = [t for t in trials_of(app, sweep_id) if t.status == JobStatus.QUEUED]
        assert len(active) <= 3
    assert [t.trial_number for t in trials_of(app, sweep_id)] == list(range(6))


def test_a_grid_sweep_tries_each_point_once(
    client: TestClient, alice: Headers, app: FastAPI
) -> None:
    body = sweep_body(
        method="grid",
        parameters={
            "model.layers[0].units": {"values": [4, 8]},
            "training.batch_size": {"values": [16, "full"]},
        },
        max_trials=None,
        max_concurrent=3,
    )
    created = client.post("/v1/sweeps", json=body, headers=alice).json()
    assert created["max_trials"] == 4
    for _ in range(3):
        finish_active(app)
        advance(app, created["id"])
    seen = sorted(
        (p["model.layers[0].units"], str(p["training.batch_size"]))
        for p in (t.trial_params or {} for t in trials_of(app, created["id"]))
    )
    assert seen == [(4, "16"), (4, "full"), (8, "16"), (8, "full")]


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        (
            {"parameters": {"model.layers[9].units": {"values": [4]}}},
            ["body", "parameters", "model.layers[9].units"],
            "has 2 items, so [9] does not exist",
        ),
        (
            {"parameters": {"optimizer.learning_rte": {"values": [0.1]}}},
            ["body", "parameters", "optimizer.learning_rte"],
            "has no 'learning_rte'",
        ),
        (
            {"parameters": {"model.layers[0].units": {"values": [8, 0]}}},
            ["body", "parameters", "model.layers[0].units"],
            "the value 0 makes an invalid spec",
        ),
        (
            {
                "parameters": {
                    "training.batch_size": {"distribution": "uniform", "min": -5, "max": 5}
                }
            },
            ["body", "parameters", "training.batch_size"],
            "the value -5.0 makes an invalid spec",
        ),
        (
            {"metric": {"name": "val_f1", "goal": "maximize"}},
            ["body", "metric", "name"],
            "'val_f1' is not recorded by the spec",
        ),
        (
            {"spec": {**iris_spec(), "dataset": "builtin:nope"}},
            ["body", "spec", "dataset"],
            "no dataset 'builtin:nope'",
        ),
        (
            {"early_termination": {"type": "asha", "min_epochs": 6}},
            ["body", "early_termination", "min_epochs"],
            "must be below the spec's training.epochs (6)",
        ),
        (
            {"spec": {**iris_spec(), "init_from": {"job": "5f0c6a1e-4d43-4a8e-9a53-2f6f0e8f1c2d"}}},
            ["body", "spec", "init_from", "job"],
            "no job",
        ),
        (
            {"parameters": {"dataset": {"values": ["builtin:iris", "someone-elses-dataset"]}}},
            ["body", "parameters", "dataset"],
            "the value 'someone-elses-dataset' makes an invalid spec: dataset: no dataset",
        ),
        (
            {
                "method": "grid",
                "max_trials": None,
                "parameters": {
                    "training.seed": {"values": list(range(200))},
                    "model.layers[0].units": {"values": list(range(1, 101))},
                },
            },
            ["body"],
            "the grid has 20000 points; at most 10000",
        ),
        ({"max_concurrent": 0}, ["body", "max_concurrent"], "greater than 0"),
        ({"method": "bayes"}, ["body", "method"], "'grid', 'random' or 'tpe'"),
    ],
)
def test_an_invalid_sweep_is_a_422_at_its_place_and_queues_nothing(
    client: TestClient,
    alice: Headers,
    app: FastAPI,
    change: dict[str, Any],
    loc: list[Any],
    message: str,
) -> None:
    answer = client.post("/v1/sweeps", json=sweep_body(**change), headers=alice)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert any(item["loc"] == loc and message in item["msg"] for item in detail), detail
    assert client.get("/v1/sweeps", headers=alice).json()["data"] == []
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []


def test_cancel_ends_the_sweep_and_its_trials(
    client: TestClient, alice: Headers, app: FastAPI
) -> None:
    sweep_id = client.post("/v1/sweeps", json=sweep_body(), headers=alice).json()["id"]
    with transaction(app.state.sessionmaker) as session:  # one trial is running
        session.execute(
            update(Job)
            .where(Job.sweep_id == sweep_id, Job.trial_number == 0)
            .values(status=JobStatus.RUNNING)
        )
    answer = client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=alice)
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    running, queued = trials_of(app, sweep_id)
    assert running.status == JobStatus.RUNNING and running.cancel_requested
    assert queued.status == JobStatus.CANCELLED
    assert advance(app, sweep_id) == []  # a cancelled sweep makes no trial
    again = client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=alice)
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


def test_another_tenants_sweep_is_not_found(
    client: TestClient, alice: Headers, bob: Headers
) -> None:
    sweep_id = client.post("/v1/sweeps", json=sweep_body(), headers=alice).json()["id"]
    for path in ["", "/trials", "/events"]:
        assert client.get(f"/v1/sweeps/{sweep_id}{path}", headers=bob).status_code == 404
    assert client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=bob).status_code == 404
    assert client.get("/v1/sweeps", headers=bob).json()["data"] == []
    assert client.get(f"/v1/jobs?sweep={sweep_id}", headers=bob).json()["data"] == []
    assert [s["id"] for s in client.get("/v1/sweeps", headers=alice).json()["data"]] == [sweep_id]


def test_the_event_stream_sends_the_sweep_and_its_trials_and_ends(
    client: TestClient, alice: Headers, app: FastAPI
) -> None:
    sweep_id = client.post("/v1/sweeps", json=sweep_body(), headers=alice).json()["id"]
    client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=alice)
    with client.stream("GET", f"/v1/sweeps/{sweep_id}/events", headers=alice) as stream:
        text = "".join(stream.iter_text())
    events = [block.split("\n")[0] for block in text.strip().split("\n\n")]
    assert events == ["event: trial", "event: trial", "event: sweep"]
    assert '"status":"cancelled"' in text
