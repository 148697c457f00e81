"""The quotas (active jobs and storage: 429 with Retry-After; sweeps wait for room) and the
key commands (`backprop keys create|list|revoke`, run as a user runs them)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Artifact, Job
from app.domain.status import ArtifactKind, JobStatus
from app.domain.sweeps import controller
from app.key_watch import REVOCATION_POLL_SECONDS
from app.rate_limit import RateLimiter
from tests.app.files import leftovers, npz_bytes
from tests.specs import IRIS_MLP

Headers = dict[str, str]


def test_a_tenant_at_its_active_jobs_quota_gets_429_and_others_do_not(
    client: TestClient, alice: Headers, bob: Headers, settings: Settings, app: FastAPI
) -> None:
    settings.max_active_jobs = 2
    for _ in range(2):
        assert client.post("/v1/jobs", json=IRIS_MLP, headers=alice).status_code == 201
    refused = client.post("/v1/jobs", json=IRIS_MLP, headers=alice)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    assert "BACKPROP_MAX_ACTIVE_JOBS is 2" in refused.json()["detail"]
    assert client.post("/v1/jobs", json=IRIS_MLP, headers=bob).status_code == 201

    # One of alice's jobs ends: there is room again.
    first = client.get("/v1/jobs", headers=alice).json()["data"][0]["id"]
    assert client.post(f"/v1/jobs/{first}/cancel", headers=alice).status_code == 202
    assert client.post("/v1/jobs", json=IRIS_MLP, headers=alice).status_code == 201


def test_a_sweeps_trials_wait_for_room_under_the_quota(
    client: TestClient, alice: Headers, settings: Settings, app: FastAPI
) -> None:
    settings.max_active_jobs = 3
    assert client.post("/v1/jobs", json=IRIS_MLP, headers=alice).status_code == 201
    body = {
        "spec": IRIS_MLP,
        "parameters": {"model.layers[0].units": {"values": [2, 4, 8, 16]}},
        "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "max_concurrent": 4,
    }
    sweep = client.post("/v1/sweeps", json=body, headers=alice).json()
    assert sweep["trials"]["total"] == 2  # 3 active at most, one of them the job above

    with transaction(app.state.sessionmaker) as session:
        session.execute(
            update(Job).where(Job.sweep_id.is_(None)).values(status=JobStatus.SUCCEEDED)
        )
    controller.advance(app.state.sessionmaker, sweep["id"], lambda *_: None, settings)
    with transaction(app.state.sessionmaker) as session:
        trials = session.scalars(select(Job.trial_number).where(Job.sweep_id == sweep["id"]))
        assert sorted(trials) == [0, 1, 2]


def _backprop(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_are_listed_without_their_secret_and_a_revoked_key_is_refused_at_once(
    client: TestClient, settings: Settings, app: FastAPI
) -> None:
    data_dir = settings.data_dir
    created = _backprop("keys", "create", "--tenant", "carol", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # now cached
    app.state.key_watch.flush_use()  # what the API does every 10 s and at shutdown

    listed = _backprop("keys", "list", "--tenant", "carol", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t") == ["id", "key", "tenant", "created", "last_used", "revoked"]
    key_id, shown, tenant, _, last_used, revoked = row.split("\t")
    assert key not in listed.stdout and shown == key[:10] + "…" and tenant == "carol"
    assert last_used and not revoked

    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")  # right prefix
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401

    revoked_by = _backprop("keys", "revoke", shown, data_dir=data_dir)  # by what `list` shows
    assert revoked_by.returncode == 0 and f"revoked key {key_id}" in revoked_by.stderr
    # The cached key stops working in this API process within its revocation poll.
    deadline = time.monotonic() + 2 * REVOCATION_POLL_SECONDS + 1
    while client.get("/v1/jobs", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.05)
    listed = _backprop("keys", "list", data_dir=data_dir).stdout
    assert next(line for line in listed.splitlines() if line.startswith(key_id)).split("\t")[5]
    missing = _backprop("keys", "revoke", "no-such-key", data_dir=data_dir)
    assert missing.returncode == 1 and "no such key" in missing.stderr


def test_a_revoked_key_s_open_event_stream_ends(
    client: TestClient, settings: Settings, app: FastAPI
) -> None:
    key = _backprop("keys", "create", "--tenant", "dave", data_dir=settings.data_dir).stdout
    headers = {"Authorization": f"Bearer {key.strip()}"}
    job = client.post("/v1/jobs", json=IRIS_MLP, headers=headers).json()  # stays queued
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=headers) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "id: 0.1" and next(lines) == "event: status"
        revoked = _backprop("keys", "revoke", key.strip(), data_dir=settings.data_dir)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        rest = list(lines)  # returns once the server ends the stream
        assert time.monotonic() - started < 2 * REVOCATION_POLL_SECONDS + 1
    assert not any(line.startswith("event: ") for line in rest)  # ended, not a status


def test_a_tenant_over_its_storage_quota_gets_429_until_it_deletes(
    client: TestClient, alice: Headers, bob: Headers, settings: Settings, app: FastAPI
) -> None:
    first = npz_bytes(x=np.zeros((50, 4), np.float32), y=np.zeros(50, np.int64))
    settings.max_storage_bytes = len(first) + 100
    upload = client.post("/v1/datasets", files={"file": ("a.npz", first)}, headers=alice)
    assert upload.status_code == 201, upload.text

    # A second file does not fit: cut off at the room left, nothing of it kept.
    second = client.post("/v1/datasets", files={"file": ("b.npz", first)}, headers=alice)
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 0
    detail = second.json()["detail"]
    assert "BACKPROP_MAX_STORAGE_BYTES" in detail and "bytes left" in detail
    assert leftovers(settings.data_dir) == [settings.data_dir / "datasets" / upload.json()["id"]]
    # Another tenant's quota is its own.
    assert (
        client.post("/v1/datasets", files={"file": ("b.npz", first)}, headers=bob).status_code
        == 201
    )

    # A job finished with a model: alice is now over, and a new job (which will write a
    # model too) is refused until she deletes something.
    job = client.post("/v1/jobs", json=IRIS_MLP, headers=alice).json()
    with transaction(app.state.sessionmaker) as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status=JobStatus.SUCCEEDED))
        session.add(Artifact(job_id=job["id"], kind=ArtifactKind.MODEL, path="m", size_bytes=500))
    refused = client.post("/v1/jobs", json=IRIS_MLP, headers=alice)
    assert refused.status_code == 429 and "DELETE /v1/jobs/{id}" in refused.json()["detail"]
    assert client.delete(f"/v1/jobs/{job['id']}", headers=alice).status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).status_code == 404
    assert client.post("/v1/jobs", json=IRIS_MLP, headers=alice).status_code == 201


def test_only_a_finished_job_no_active_job_starts_from_can_be_deleted(
    client: TestClient, alice: Headers, bob: Headers, app: FastAPI
) -> None:
    job = client.post("/v1/jobs", json=IRIS_MLP, headers=alice).json()
    queued = client.delete(f"/v1/jobs/{job['id']}", headers=alice)
    assert queued.status_code == 409 and "cancel it" in queued.json()["detail"]
    assert client.delete(f"/v1/jobs/{job['id']}", headers=bob).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).status_code == 202
    # A queued job that starts from its model keeps it.
    user = client.post("/v1/jobs", json=IRIS_MLP, headers=alice).json()
    with transaction(app.state.sessionmaker) as session:
        spec = {**IRIS_MLP, "init_from": {"job": job["id"]}}
        session.execute(update(Job).where(Job.id == user["id"]).values(spec=spec))
    in_use = client.delete(f"/v1/jobs/{job['id']}", headers=alice)
    assert in_use.status_code == 409 and user["id"] in in_use.json()["detail"]
    assert client.post(f"/v1/jobs/{user['id']}/cancel", headers=alice).status_code == 202
    assert client.delete(f"/v1/jobs/{job['id']}", headers=alice).status_code == 204
    assert client.delete(f"/v1/jobs/{job['id']}", headers=alice).status_code == 404


def test_a_key_over_the_rate_limit_gets_429_and_other_keys_do_not(
    client: TestClient, alice: Headers, bob: Headers, app: FastAPI
) -> None:
    app.state.rate_limiter = RateLimiter(3)  # as BACKPROP_RATE_LIMIT=3 sets it up
    answers = [client.get("/v1/jobs", headers=alice).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    refused = client.get("/v1/jobs", headers=alice)
    assert refused.headers["Retry-After"] == "1"
    assert "BACKPROP_RATE_LIMIT" in refused.json()["detail"]
    assert client.get("/v1/jobs", headers=bob).status_code == 200
    time.sleep(1.1)  # the window moves on
    assert client.get("/v1/jobs", headers=alice).status_code == 200
