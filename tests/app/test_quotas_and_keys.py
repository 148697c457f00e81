"""The active-jobs quota (429 with Retry-After, sweeps wait for room) and the key commands
(`backprop keys create|list|revoke`, run as a user runs them)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.auth import KeyCache
from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job
from app.domain.status import JobStatus
from app.domain.sweeps import controller
from app.rate_limit import RateLimiter
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


def test_keys_are_listed_without_their_secret_and_a_revoked_key_is_refused(
    client: TestClient, settings: Settings, app: FastAPI
) -> None:
    app.state.key_cache = KeyCache(0)  # this API process checks the key on every request
    data_dir = settings.data_dir
    created = _backprop("keys", "create", "--tenant", "carol", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200

    listed = _backprop("keys", "list", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout and key[:10] + "…" in listed.stdout
    (row,) = [line for line in listed.stdout.splitlines() if "\tcarol\t" in line]
    key_id = row.split("\t")[0]

    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")  # right prefix
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401

    revoked = _backprop("keys", "revoke", key_id, data_dir=data_dir)
    assert revoked.returncode == 0 and f"revoked key {key_id}" in revoked.stderr
    assert client.get("/v1/jobs", headers=headers).status_code == 401
    listed = _backprop("keys", "list", data_dir=data_dir).stdout
    assert next(line for line in listed.splitlines() if line.startswith(key_id)).split("\t")[4]
    missing = _backprop("keys", "revoke", "no-such-key", data_dir=data_dir)
    assert missing.returncode == 1 and "no such key" in missing.stderr


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
