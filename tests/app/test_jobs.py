"""The jobs API. No worker runs here: its effects are simulated by writing rows directly."""

from __future__ import annotations

import copy
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Dataset, Job, Metric, Tenant, Worker
from app.domain.db.types import utcnow
from app.services import jobs as jobs_service
from app.services.metrics_query import downsample
from core.spec import parse_spec
from core.spec.examples import DIGITS_CNN
from tests.specs import IRIS_MLP

Headers = dict[str, str]


def spec(base: dict[str, Any] = IRIS_MLP, **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(base), **changes}


def submit(client: TestClient, headers: Headers, body: dict[str, Any], **kw: Any) -> Any:
    return client.post("/v1/jobs", json=body, headers=headers, **kw)


def tenant_id(app: FastAPI, name: str) -> str:
    with transaction(app.state.sessionmaker) as session:
        return session.scalars(select(Tenant.id).where(Tenant.name == name)).one()


def insert_job(app: FastAPI, tenant: str, **fields: Any) -> str:
    """A job row as a worker would leave it (queued unless `status` says otherwise)."""
    values: dict[str, Any] = {
        "tenant_id": tenant_id(app, tenant),
        "name": "job",
        "dataset": "builtin:iris",
        "device": "cpu",
        "queue": "cpu",
        "spec": parse_spec(IRIS_MLP).model_dump(mode="json"),
        **fields,
    }
    with transaction(app.state.sessionmaker) as session:
        job = Job(**values)
        session.add(job)
        session.flush()
        return job.id


def job_row(app: FastAPI, job_id: str) -> Job:
    with transaction(app.state.sessionmaker) as session:
        return session.get_one(Job, job_id)


def update_job(app: FastAPI, job_id: str, **fields: Any) -> None:
    with transaction(app.state.sessionmaker) as session:
        job = session.get_one(Job, job_id)
        for key, value in fields.items():
            setattr(job, key, value)


def broker_messages(settings: Settings) -> list[Path]:
    return sorted((settings.broker_dir / "queue").glob("*"))


def errors(response: Any) -> list[tuple[Any, ...]]:
    assert response.status_code == 422, response.text
    return [tuple(e["loc"]) for e in response.json()["detail"]]


class RecordingQueue:
    """Records sends, and whether the job was already committed when it was sent."""

    def __init__(self, app: FastAPI, fail: bool = False):
        self.app, self.fail = app, fail
        self.sent: list[tuple[str, str, str | None]] = []

    def send(self, job_id: str, queue: str) -> None:
        with transaction(self.app.state.sessionmaker) as session:
            row = session.get(Job, job_id)
        self.sent.append((job_id, queue, row.status if row else None))
        if self.fail:
            raise ConnectionError("broker down")


# Submitting


def test_submit_the_api_md_digits_cnn(
    client: TestClient, app: FastAPI, alice: Headers, settings: Settings
) -> None:
    response = submit(client, alice, DIGITS_CNN)
    assert response.status_code == 201, response.text
    job = response.json()
    assert set(job) == {
        "id", "name", "status", "attempt", "platform_interruptions", "dataset", "device",
        "worker", "created_at",
        "started_at", "finished_at", "queue_position", "waiting_for", "progress", "eta_seconds",
        "summary",
        "error", "timings", "spec", "sweep_id", "trial",
    }  # fmt: skip
    assert job["status"] == "queued"
    phases = ["queued", "startup", "compile", "training", "finalizing", "total"]
    assert job["timings"] == dict.fromkeys(phases)  # nothing reached yet
    assert (job["name"], job["dataset"], job["device"]) == ("digits-cnn", "builtin:digits", "auto")
    assert (job["attempt"], job["queue_position"], job["worker"]) == (1, 1, None)
    assert job["progress"] is None and job["started_at"] is None and job["error"] is None
    # The stored spec is the validated one, defaults filled in.
    layers = job["spec"]["model"]["layers"]
    assert [layer["name"] for layer in layers][:2] == ["conv2d_0", "max_pool2d_1"]
    assert layers[0]["kernel_size"] == [3, 3] and layers[0]["padding"] == "same"
    assert job["spec"]["loss"]["type"] == "cross_entropy"
    assert job["spec"]["training"]["early_stopping"]["mode"] == "min"
    assert job["spec"]["training"]["log_every_steps"] == 10
    row = job_row(app, job["id"])
    assert (row.queue, row.max_attempts, row.dataset_id) == ("cpu", settings.max_attempts, None)
    assert len(broker_messages(settings)) == 1
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json() == job


def test_sends_to_the_broker_only_after_the_commit(
    client: TestClient, app: FastAPI, alice: Headers
) -> None:
    app.state.queue = queue = RecordingQueue(app)
    job = submit(client, alice, spec(device="gpu")).json()
    assert queue.sent == [(job["id"], "gpu", "queued")]


def test_a_broker_failure_leaves_the_job_queued(
    client: TestClient, app: FastAPI, alice: Headers
) -> None:
    app.state.queue = queue = RecordingQueue(app, fail=True)
    response = submit(client, alice, spec())
    assert response.status_code == 201
    assert len(queue.sent) == 1
    assert job_row(app, response.json()["id"]).status == "queued"


def test_name_defaults_to_dataset_and_short_id(client: TestClient, alice: Headers) -> None:
    job = submit(client, alice, spec()).json()
    assert job["name"] == f"iris-{job['id'][:8]}"
    assert job["spec"]["name"] is None


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (
            lambda s: s["model"]["layers"][3].update(unitz=3),
            ("body", "model", "layers", 3, "unitz"),
        ),
        (
            lambda s: s["model"]["layers"][0].update(kernel_size=0),
            ("body", "model", "layers", 0, "kernel_size"),
        ),
        (lambda s: s["model"]["layers"][5].update(units=12), ("body", "model", "layers", 5)),
        (lambda s: s.update(dataset="builtin:nope"), ("body", "dataset")),
        (lambda s: s.update(dataset="9b2f4c1e-0000-4000-8000-000000000000"), ("body", "dataset")),
        (
            lambda s: s.update(validation={"dataset": "builtin:nope"}),
            ("body", "validation", "dataset"),
        ),
        (
            lambda s: s.update(validation={"dataset": "builtin:iris"}),
            ("body", "validation", "dataset"),
        ),
    ],
    ids=[
        "unknown-key",
        "kernel-size-0",
        "shape",
        "builtin",
        "id",
        "validation",
        "validation-shape",
    ],
)
def test_invalid_specs_are_422_at_the_field(
    client: TestClient, alice: Headers, settings: Settings, change: Any, loc: tuple[Any, ...]
) -> None:
    body = copy.deepcopy(DIGITS_CNN)
    change(body)
    response = submit(client, alice, body)
    assert errors(response) == [loc]
    assert not broker_messages(settings)
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []


def test_a_shape_mismatch_names_the_layer(client: TestClient, alice: Headers) -> None:
    body = copy.deepcopy(DIGITS_CNN)
    body["model"]["layers"][5]["units"] = 12
    detail = submit(client, alice, body).json()["detail"]
    assert "dense_5" in detail[0]["msg"]


def test_body_must_be_a_json_object(client: TestClient, alice: Headers) -> None:
    assert client.post("/v1/jobs", json=[1], headers=alice).status_code == 422
    bad = client.post(
        "/v1/jobs", content=b"{", headers={**alice, "content-type": "application/json"}
    )
    assert bad.status_code == 422


def insert_dataset(app: FastAPI, tenant: str) -> str:
    """An uploaded dataset's row, as the datasets API leaves it: 30 examples of [4], 3 classes."""
    with transaction(app.state.sessionmaker) as session:
        row = Dataset(
            tenant_id=tenant_id(app, tenant), name="tiny", format="csv",
            task="classification", num_examples=30, input_shape=[4], target_shape=[],
            num_classes=3, class_names=["0", "1", "2"], size_bytes=300, sha256="0" * 64,
            storage_path="datasets/tiny",
        )  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def test_an_uploaded_dataset_is_the_tenants_alone(
    client: TestClient, app: FastAPI, alice: Headers, bob: Headers
) -> None:
    dataset_id = insert_dataset(app, "bob")
    job = submit(client, bob, spec(dataset=dataset_id)).json()
    assert job["name"] == f"tiny-{job['id'][:8]}"
    assert job_row(app, job["id"]).dataset_id == dataset_id
    assert errors(submit(client, alice, spec(dataset=dataset_id))) == [("body", "dataset")]
    held_out = spec(validation={"dataset": dataset_id})
    assert errors(submit(client, alice, held_out)) == [("body", "validation", "dataset")]
    response = submit(client, bob, held_out)
    assert response.status_code == 201, response.text
    assert job_row(app, response.json()["id"]).validation_dataset_id == dataset_id


# init_from


def write_model(settings: Settings, job_id: str, tensors: dict[str, tuple[int, ...]]) -> str:
    relative = f"jobs/{job_id}/model.safetensors"
    path = settings.data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.zeros(shape, np.float32) for name, shape in tensors.items()}
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "backprop/1"})
    return relative


IRIS_MLP_TENSORS = {
    "dense_0.kernel": (4, 8),
    "dense_0.bias": (8,),
    "dense_1.kernel": (8, 3),
    "dense_1.bias": (3,),
}


def test_init_from_a_job_with_a_fitting_model(
    client: TestClient, app: FastAPI, alice: Headers, settings: Settings
) -> None:
    source = insert_job(app, "alice", status="succeeded")
    update_job(app, source, model_path=write_model(settings, source, IRIS_MLP_TENSORS))
    response = submit(client, alice, spec(init_from={"job": source}))
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["init_from"] == {"job": source}


def test_init_from_needs_the_tenants_job_with_a_model(
    client: TestClient, app: FastAPI, alice: Headers, bob: Headers, settings: Settings
) -> None:
    without_model = insert_job(app, "alice", status="running")
    bobs = insert_job(app, "bob", status="succeeded")
    update_job(app, bobs, model_path=write_model(settings, bobs, IRIS_MLP_TENSORS))
    for source in (without_model, bobs, "no-such-job"):
        response = submit(client, alice, spec(init_from={"job": source}))
        assert errors(response) == [("body", "init_from", "job")]
    assert (
        "no trained model"
        in submit(client, alice, spec(init_from={"job": without_model})).json()["detail"][0]["msg"]
    )


def test_init_from_says_which_tensor_differs(
    client: TestClient, app: FastAPI, alice: Headers, settings: Settings
) -> None:
    source = insert_job(app, "alice", status="succeeded")
    wider = {**IRIS_MLP_TENSORS, "dense_1.kernel": (8, 5), "dense_1.bias": (5,)}
    update_job(app, source, model_path=write_model(settings, source, wider))
    response = submit(client, alice, spec(init_from={"job": source}))
    assert errors(response) == [("body", "init_from", "job")]
    message = response.json()["detail"][0]["msg"]
    assert "dense_1.bias" in message and "[5]" in message and "[3]" in message


# Idempotency


def test_idempotency_key_returns_the_first_job(
    client: TestClient, app: FastAPI, alice: Headers, bob: Headers, settings: Settings
) -> None:
    key = {"Idempotency-Key": "run-42"}
    first = submit(client, {**alice, **key}, spec())
    again = submit(client, {**alice, **key}, spec(name="other"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(broker_messages(settings)) == 1
    assert submit(client, {**bob, **key}, spec()).status_code == 201  # keys are per tenant
    assert submit(client, alice, spec()).json()["id"] != first.json()["id"]


def test_idempotency_key_race_answers_the_winner(
    client: TestClient, app: FastAPI, alice: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = insert_job(app, "alice", idempotency_key="k")
    lookup = jobs_service._by_idempotency_key
    calls: list[str] = []

    def not_yet_committed_at_first(session: Any, tenant: str, key: str) -> Job | None:
        calls.append(key)
        return None if len(calls) == 1 else lookup(session, tenant, key)

    monkeypatch.setattr(jobs_service, "_by_idempotency_key", not_yet_committed_at_first)
    response = submit(client, {**alice, "Idempotency-Key": "k"}, spec())
    assert response.status_code == 200
    assert response.json()["id"] == winner


# Reading and listing


def test_list_filters_and_pages(
    client: TestClient, app: FastAPI, alice: Headers, bob: Headers
) -> None:
    start = utcnow()
    ids = [
        insert_job(
            app,
            "alice",
            name="a" if i % 2 else "b",
            status="succeeded" if i < 3 else "queued",
            created_at=start + timedelta(seconds=i),
        )
        for i in range(5)
    ]
    insert_job(app, "bob")
    newest_first = ids[::-1]
    listed = client.get("/v1/jobs", headers=alice).json()
    assert [j["id"] for j in listed["data"]] == newest_first
    assert listed["next_cursor"] is None

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=alice).json()
        seen += [j["id"] for j in page["data"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == newest_first

    def listed_ids(**params: Any) -> list[str]:
        return [
            j["id"] for j in client.get("/v1/jobs", params=params, headers=alice).json()["data"]
        ]

    assert listed_ids(status="succeeded") == ids[2::-1]
    assert listed_ids(name="a") == [ids[3], ids[1]]
    assert listed_ids(name="a", status="queued") == [ids[3]]
    assert errors(client.get("/v1/jobs", params={"limit": 201}, headers=alice)) == [
        ("query", "limit")
    ]
    assert errors(client.get("/v1/jobs", params={"status": "done"}, headers=alice)) == [
        ("query", "status")
    ]
    assert errors(client.get("/v1/jobs", params={"cursor": "nope"}, headers=alice)) == [
        ("query", "cursor")
    ]


def test_a_running_jobs_progress_summary_and_error(
    client: TestClient, app: FastAPI, alice: Headers
) -> None:
    progress = {"epoch": 3, "epochs": 20, "step": 72, "steps": 480, "fraction": 0.15}
    job_id = insert_job(
        app, "alice", status="running", worker="host-1", started_at=utcnow(),
        progress=progress, eta_seconds=12.5,
    )  # fmt: skip
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert (job["status"], job["worker"], job["queue_position"]) == ("running", "host-1", None)
    assert job["progress"] == progress and job["eta_seconds"] == 12.5
    error = {"code": "non_finite_loss", "message": "loss is nan", "epoch": 4, "step": 91}
    update_job(app, job_id, status="failed", error=error, finished_at=utcnow())
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert job["error"] == error and job["finished_at"] is not None


def test_queue_position_orders_queued_jobs_of_each_queue(
    client: TestClient, app: FastAPI, alice: Headers, bob: Headers
) -> None:
    start = utcnow()

    def at(seconds: int, tenant: str = "alice", **fields: Any) -> str:
        return insert_job(app, tenant, created_at=start + timedelta(seconds=seconds), **fields)

    running = at(0, status="running")
    first, bobs, third = at(1), at(2, "bob"), at(3)
    gpu = at(4, queue="gpu", device="gpu")

    def position(job_id: str, headers: Headers = alice) -> Any:
        return client.get(f"/v1/jobs/{job_id}", headers=headers).json()["queue_position"]

    assert [position(first), position(bobs, bob), position(third)] == [1, 2, 3]
    assert (position(gpu), position(running)) == (1, None)
    listed = client.get("/v1/jobs", headers=alice).json()["data"]
    assert [j["queue_position"] for j in listed] == [1, 3, 1, None]
    update_job(app, first, status="running")
    assert (position(bobs, bob), position(third)) == (1, 2)


def test_401_without_a_valid_key(client: TestClient, alice: Headers) -> None:
    job_id = submit(client, alice, spec()).json()["id"]
    for headers in ({}, {"Authorization": "Bearer bp_wrong"}):
        assert client.post("/v1/jobs", json=IRIS_MLP, headers=headers).status_code == 401
        assert client.get("/v1/jobs", headers=headers).status_code == 401
        assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 401
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 401


def test_another_tenants_job_is_404_everywhere(
    client: TestClient, app: FastAPI, alice: Headers, bob: Headers, settings: Settings
) -> None:
    job_id = insert_job(app, "alice", status="succeeded", name="mine")
    update_job(app, job_id, model_path=write_model(settings, job_id, IRIS_MLP_TENSORS))
    for path in ("", "/metrics", "/model"):
        assert client.get(f"/v1/jobs/{job_id}{path}", headers=alice).status_code == 200
        for missing in (f"/v1/jobs/{job_id}{path}", f"/v1/jobs/no-such-id{path}"):
            response = client.get(missing, headers=bob)
            assert response.status_code == 404
            assert "no job with id" in response.json()["detail"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert client.get("/v1/jobs", headers=bob).json()["data"] == []


# Cancelling


def test_cancel_a_queued_job_at_once(client: TestClient, app: FastAPI, alice: Headers) -> None:
    job_id = submit(client, alice, spec()).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None and job["queue_position"] is None
    assert job_row(app, job_id).status == "cancelled"


def test_cancel_a_running_job_asks_its_worker(
    client: TestClient, app: FastAPI, alice: Headers
) -> None:
    job_id = insert_job(app, "alice", status="running", worker="host-1")
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    row = job_row(app, job_id)
    assert row.cancel_requested and row.finished_at is None


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_a_finished_job_is_409(
    client: TestClient, app: FastAPI, alice: Headers, status: str
) -> None:
    job_id = insert_job(app, "alice", status=status, finished_at=utcnow())
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert response.status_code == 409
    assert status in response.json()["detail"]
    assert not job_row(app, job_id).cancel_requested


# Metrics


def insert_metrics(
    app: FastAPI, job_id: str, name: str, values: list[float], every: int = 10
) -> None:
    with transaction(app.state.sessionmaker) as session:
        session.add_all(
            Metric(job_id=job_id, name=name, step=i * every, epoch=i // 10, value=v)
            for i, v in enumerate(values)
        )


def test_metrics_series_and_filters(client: TestClient, app: FastAPI, alice: Headers) -> None:
    job_id = insert_job(app, "alice", status="running")
    insert_metrics(app, job_id, "val_accuracy", [0.5, 0.7], every=24)
    insert_metrics(app, job_id, "loss", [2.1, 1.7, 1.5, float("inf")])  # SQLite: no NaN
    url = f"/v1/jobs/{job_id}/metrics"
    body = client.get(url, headers=alice).json()
    assert body["job_id"] == job_id
    loss, val = body["series"]
    assert (loss["name"], val["name"]) == ("loss", "val_accuracy")
    assert loss["step"] == [0, 10, 20, 30] and loss["epoch"] == [0, 0, 0, 0]
    assert loss["value"] == [2.1, 1.7, 1.5, None]
    assert len(loss["time"]) == 4
    assert val["step"] == [0, 24]

    only = client.get(url, params={"name": ["val_accuracy"]}, headers=alice).json()
    assert [s["name"] for s in only["series"]] == ["val_accuracy"]
    both = client.get(url, params={"name": ["val_accuracy", "loss"]}, headers=alice).json()
    assert [s["name"] for s in both["series"]] == ["loss", "val_accuracy"]
    since = client.get(url, params={"since_step": 20}, headers=alice).json()
    assert [s["step"] for s in since["series"]] == [[20, 30], [24]]
    assert errors(client.get(url, params={"max_points": 3}, headers=alice)) == [
        ("query", "max_points")
    ]


def test_metrics_downsampling_keeps_first_last_min_and_max(
    client: TestClient, app: FastAPI, alice: Headers
) -> None:
    job_id = insert_job(app, "alice", status="running")
    values = [1.0 + math.sin(i / 7) for i in range(500)]
    values[123], values[321] = -5.0, 9.0
    insert_metrics(app, job_id, "loss", values)
    url = f"/v1/jobs/{job_id}/metrics"
    for max_points in (4, 5, 20, 499):
        series = client.get(url, params={"max_points": max_points}, headers=alice).json()
        steps = series["series"][0]["step"]
        assert len(steps) == max_points
        assert steps == sorted(steps)
        assert {0, 1230, 3210, 4990} <= set(steps)
    everything = client.get(url, params={"max_points": 1000}, headers=alice).json()
    assert len(everything["series"][0]["step"]) == 500


def test_downsample_spreads_the_remaining_points_evenly() -> None:
    values = [float(i) for i in range(101)]  # the minimum is first, the maximum last
    assert downsample(values, 5) == [0, 25, 50, 75, 100]
    picked = downsample(values, 11)
    assert picked == list(range(0, 101, 10))
    assert downsample(values, 200) == list(range(101))
    # NaN is never the minimum or the maximum; a taken spot moves to the nearest free one.
    assert downsample([3.0, float("nan"), 1.0, 2.0, 5.0], 4) == [0, 1, 2, 4]
    with pytest.raises(ValueError, match="at least 4"):
        downsample(values, 3)


# Model download


def test_model_is_404_until_written_then_the_file(
    client: TestClient, app: FastAPI, alice: Headers, settings: Settings
) -> None:
    job_id = insert_job(app, "alice", status="running", name="digits cnn/v2")
    url = f"/v1/jobs/{job_id}/model"
    response = client.get(url, headers=alice)
    assert response.status_code == 404
    assert "no model" in response.json()["detail"]
    relative = write_model(settings, job_id, IRIS_MLP_TENSORS)
    update_job(app, job_id, status="succeeded", model_path=relative)
    response = client.get(url, headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert 'filename="digits_cnn_v2.safetensors"' in response.headers["content-disposition"]
    assert response.content == (settings.data_dir / relative).read_bytes()
    loaded = safetensors.numpy.load(response.content)
    assert {name: a.shape for name, a in loaded.items()} == IRIS_MLP_TENSORS


# Device routing


def add_worker(
    app: FastAPI, *, seen_ago: float = 1.0, busy: bool = False, gpu: bool = True
) -> None:
    with transaction(app.state.sessionmaker) as session:
        session.add(
            Worker(
                name=f"w-{seen_ago}-{busy}-{gpu}",
                queues=["gpu"] if gpu else ["cpu"],
                has_gpu=gpu,
                running_job_id="some-job" if busy else None,
                last_seen=utcnow() - timedelta(seconds=seen_ago),
            )
        )


def routed(client: TestClient, app: FastAPI, headers: Headers, device: str) -> str:
    response = submit(client, headers, spec(device=device))
    assert response.status_code == 201, response.text
    assert response.json()["device"] == device
    return job_row(app, response.json()["id"]).queue


def test_routing_by_device(client: TestClient, app: FastAPI, alice: Headers) -> None:
    assert routed(client, app, alice, "cpu") == "cpu"
    assert routed(client, app, alice, "gpu") == "gpu"  # waits for a GPU worker
    assert routed(client, app, alice, "auto") == "cpu"  # no GPU worker
    add_worker(app, seen_ago=60)  # not seen recently
    add_worker(app, busy=True)
    add_worker(app, gpu=False)
    assert routed(client, app, alice, "auto") == "cpu"


def test_auto_goes_to_an_idle_gpu_worker(client: TestClient, app: FastAPI, alice: Headers) -> None:
    add_worker(app)
    assert routed(client, app, alice, "auto") == "gpu"
    # That worker is now spoken for by the queued gpu job: the next auto job goes to cpu.
    assert routed(client, app, alice, "auto") == "cpu"


# OpenAPI


def test_openapi_documents_bodies_and_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    submit_op = schema["paths"]["/v1/jobs"]["post"]
    body = submit_op["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/JobSpec"}
    assert next(iter(body["examples"].values()))["value"]["name"] == "digits-cnn"
    assert "JobSpec" in schema["components"]["schemas"]
    assert "`auto`" in submit_op["description"]
    assert {"200", "201", "401", "422"} <= set(submit_op["responses"])
    cancel = schema["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert {"202", "401", "404", "409"} <= set(cancel)
    for path in ("/v1/jobs/{job_id}", "/v1/jobs/{job_id}/metrics", "/v1/jobs/{job_id}/model"):
        assert {"200", "401", "404"} <= set(schema["paths"][path]["get"]["responses"])
    for name in ("JobPublic", "JobsPublic", "JobMetricsPublic"):
        assert schema["components"]["schemas"][name].get("examples"), name


def test_repeated_specs_and_a_sweep_s_trials_skip_the_shape_check(
    client: TestClient, alice: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services import job_checks

    traced: list[str] = []
    real = job_checks.check_shapes

    def counting(spec: Any, info: Any) -> Any:
        traced.append(spec.model.model_dump_json())
        return real(spec, info)

    monkeypatch.setattr(job_checks, "check_shapes", counting)
    spec = copy.deepcopy(IRIS_MLP)
    spec["model"]["layers"][0]["units"] = 37  # a model no other test checks
    for learning_rate in (0.1, 0.01, 0.001):  # trials differ in hyperparameters only
        trial = {**spec, "optimizer": {"type": "adam", "learning_rate": learning_rate}}
        assert submit(client, alice, trial).status_code == 201
    assert len(traced) == 1
    other = copy.deepcopy(spec)
    other["model"]["layers"][0]["units"] = 38  # another model is checked on its own
    assert submit(client, alice, other).status_code == 201
    bad = copy.deepcopy(spec)
    bad["model"]["layers"][-1]["units"] = 5  # iris has 3 classes: still rejected, each time
    for _ in range(2):
        assert submit(client, alice, bad).status_code == 422
    assert len(traced) == 4
