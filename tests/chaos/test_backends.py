"""Redis and PostgreSQL restarted while a job trains (a server deployment of its own).

While a backend is down the API answers at once, never hangs and never answers 500: reads
still work without Redis, a submitted job waits as `queued` in the database until the
broker is back, and without PostgreSQL every request that needs it is 503 with
`Retry-After`; `/readyz` is 503 throughout. Once the backend is back the running job
ends `succeeded` on its first attempt with one metrics row per epoch (none lost, none
written twice), and new jobs run as before.

The servers here are this module's own (the session's are shared with other tests), and
the lease is longer than the outage, as in production (30 s against a restart of a few
seconds): an outage longer than the lease re-queues the job instead, which resumes from
its checkpoint (tests/integration/test_jobs.py covers that path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.client import BackpropClient, JobStore
from tests.integration.deployments import ServerDeployment
from tests.integration.processes import Processes
from tests.servers import PostgresServer, RedisServer, wait_until
from tests.specs import LONG_DIGITS_MLP, xor_mlp

pytestmark = pytest.mark.xdist_group("chaos-backends")

JOB_SECONDS = 180  # a bound, not an expectation
OUTAGE_SECONDS = 4.0  # how long a backend stays down
ANSWER_SECONDS = 5.0  # the most any request may take while a backend is down
# Leases longer than the outages (production: 30 s). The Redis case's is shorter: a job
# submitted while Redis is down is sent again once its message has been missing that long.
REDIS_LEASE_SECONDS = "10"
POSTGRES_LEASE_SECONDS = "30"
EPOCH_SERIES = ("epoch_loss", "accuracy")  # recorded once per epoch (docs/engine.md)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # Append-only, as docker-compose runs it: queued messages survive the restart.
    server = RedisServer.start(tmp_path_factory.mktemp("redis"), append_only=True)
    try:
        yield server
    finally:
        server.stop()


Deploy = Callable[[str], ServerDeployment]


@pytest.fixture
def deploy(
    processes: Processes, own_postgres: PostgresServer, own_redis: RedisServer, tmp_path: Path
) -> Iterator[Deploy]:
    """Start `backprop api` and `backprop worker` on this module's servers, with a lease of
    the given seconds."""
    started: list[ServerDeployment] = []

    def start(lease_seconds: str) -> ServerDeployment:
        deployment = ServerDeployment(
            processes, own_postgres, own_redis, tmp_path, BACKPROP_LEASE_SECONDS=lease_seconds
        )
        started.append(deployment)
        return deployment

    yield start
    for deployment in started:
        deployment.close()


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, seconds: float) -> None:
    """503 with `Retry-After`, answered within ANSWER_SECONDS."""
    assert seconds < ANSWER_SECONDS, f"{response.request.url} took {seconds:.1f} s"
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["detail"]


def wait_for_terminal(client: BackpropClient, job_id: str) -> dict[str, Any]:
    """The job once it ended; a 503 on the way (a connection dropped by the restart, seen
    by one request per pool) is retried, anything else fails."""
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        response = client.http.get(f"/v1/jobs/{job_id}")
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {JOB_SECONDS} s")


def assert_one_row_per_epoch(store: JobStore, job_id: str, epochs: int) -> None:
    rows, distinct = store.metric_counts(job_id)
    assert rows == distinct, "a metric (name, step) was written twice"
    points = store.metric_rows(job_id)
    for name in EPOCH_SERIES:
        assert [p.epoch for p in points if p.name == name] == list(range(epochs)), name


def assert_succeeded_in_one_go(
    client: BackpropClient, store: JobStore, job_id: str, epochs: int
) -> dict[str, Any]:
    """The job succeeded, never re-queued, with one metrics row per epoch."""
    job = wait_for_terminal(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert (job["attempt"], job["platform_interruptions"]) == (1, 0), "the job was re-queued"
    assert_one_row_per_epoch(store, job_id, epochs)
    return job


def start_a_long_job(deployment: ServerDeployment, epochs: int = 40) -> str:
    """A job of `epochs` epochs of about a quarter of a second each, past its second."""
    spec = {**LONG_DIGITS_MLP, "training": {**LONG_DIGITS_MLP["training"], "epochs": epochs}}
    job_id = deployment.client.submit(spec)["id"]
    deployment.client.wait_for_progress(job_id, epoch=2, timeout=JOB_SECONDS)
    return job_id


def test_redis_restarted_mid_job(deploy: Deploy, own_redis: RedisServer) -> None:
    deployment = deploy(REDIS_LEASE_SECONDS)
    client, store = deployment.client, deployment.store
    epochs = 24
    job_id = start_a_long_job(deployment, epochs)

    own_redis.stop_server()
    down_at = time.monotonic()
    submitted, seconds = timed(lambda: client.http.post("/v1/jobs", json=xor_mlp()))
    assert seconds < ANSWER_SECONDS, f"POST /v1/jobs took {seconds:.1f} s without Redis"
    # The job is durable in the database; the reconciler sends it once the broker is back.
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["status"] == "queued"
    read, seconds = timed(lambda: client.http.get(f"/v1/jobs/{job_id}"))
    assert read.status_code == 200 and seconds < ANSWER_SECONDS, (read.text, seconds)
    ready, seconds = timed(lambda: client.http.get("/readyz"))
    assert ready.status_code == 503 and seconds < ANSWER_SECONDS, (ready.text, seconds)
    assert ready.json()["checks"]["broker"].startswith("unreachable")
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    own_redis.start_again()

    wait_until(client.ready, 30, what="/readyz after Redis is back")
    assert_succeeded_in_one_go(client, store, job_id, epochs)
    waiting = wait_for_terminal(client, submitted.json()["id"])
    assert waiting["status"] == "succeeded", waiting["error"]
    after = client.submit(xor_mlp())["id"]
    assert wait_for_terminal(client, after)["status"] == "succeeded"


def test_postgres_restarted_mid_job(deploy: Deploy, own_postgres: PostgresServer) -> None:
    deployment = deploy(POSTGRES_LEASE_SECONDS)
    client, store = deployment.client, deployment.store
    epochs = 24
    job_id = start_a_long_job(deployment, epochs)

    own_postgres.stop_server()
    down_at = time.monotonic()
    while time.monotonic() - down_at < OUTAGE_SECONDS:
        assert_unavailable(*timed(lambda: client.http.get(f"/v1/jobs/{job_id}")))
        assert_unavailable(*timed(lambda: client.http.get("/v1/jobs")))
        assert_unavailable(*timed(lambda: client.http.post("/v1/jobs", json=xor_mlp())))
        ready, seconds = timed(lambda: client.http.get("/readyz"))
        assert ready.status_code == 503 and seconds < ANSWER_SECONDS, (ready.text, seconds)
        time.sleep(0.5)
    own_postgres.start_again()

    wait_until(client.ready, 30, what="/readyz after PostgreSQL is back")
    assert_succeeded_in_one_go(client, store, job_id, epochs)
    after = client.submit(xor_mlp())["id"]
    assert wait_for_terminal(client, after)["status"] == "succeeded"


def test_postgres_down_when_the_job_ends(deploy: Deploy, own_postgres: PostgresServer) -> None:
    """Training ends while PostgreSQL is down: the last metrics and the outcome wait for it
    (the training process retries them), and nothing is written twice."""
    deployment = deploy(POSTGRES_LEASE_SECONDS)
    client, store = deployment.client, deployment.store
    epochs = 8
    job_id = start_a_long_job(deployment, epochs)

    own_postgres.stop_server()
    # The job checkpoints every epoch: its last checkpoint file means training is over.
    last = deployment.cwd / "data" / "jobs" / job_id / "checkpoints" / f"ckpt-{epochs:06d}.npz"
    wait_until(last.is_file, JOB_SECONDS, what="the job to finish training")
    time.sleep(2)  # the training process is retrying its last writes now
    own_postgres.start_again()

    job = assert_succeeded_in_one_go(client, store, job_id, epochs)
    assert job["summary"]["epochs_completed"] == epochs
