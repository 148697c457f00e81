"""Many hosts, no shared disk: the API and two worker "hosts" (separate processes with
separate data directories) share only PostgreSQL, Redis and an S3 bucket (moto's S3
server on loopback). Jobs run on both hosts; a host killed mid-job has its job resumed on
the other from the checkpoint in the bucket, bit-identical to an uninterrupted run; and
no dataset, checkpoint or model file is kept on any host's own disk but as a cached copy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load

from app.config import Settings
from app.domain.storage import storage_for
from core.data import load_builtin
from tests.integration.client import BackpropClient, JobStore
from tests.integration.deployments import API_KEY, FAST_LEASES, START_SECONDS
from tests.integration.processes import (
    ManagedProcess,
    Processes,
    backprop_command,
    clean_environment,
)
from tests.object_store import CREDENTIALS, S3Server
from tests.servers import PostgresServer, RedisServer, free_port, wait_until
from tests.specs import LONG_DIGITS_MLP

pytestmark = pytest.mark.xdist_group("object-store")

JOB_SECONDS = 240
HOSTS = ("host-a", "host-b")


class ManyHosts:
    """`backprop api` and one `backprop worker` per host, each with a data directory of
    its own, all pointed at one bucket."""

    def __init__(
        self,
        processes: Processes,
        postgres: PostgresServer,
        redis: RedisServer,
        s3: S3Server,
        tmp_path: Path,
    ):
        self.processes, self.root = processes, tmp_path
        self.bucket = s3.new_bucket()
        self.shared = {
            "BACKPROP_DATABASE_URL": postgres.create_database(),
            "BACKPROP_BROKER_URL": redis.new_broker_url(),
            "BACKPROP_STORAGE_URL": self.bucket,
            "BACKPROP_S3_ENDPOINT_URL": s3.endpoint_url,
            "BACKPROP_BOOTSTRAP_API_KEY": API_KEY,
            **CREDENTIALS,
            **FAST_LEASES,
        }
        api_env = self._env("api")
        migrate = processes.start("migrate", backprop_command("migrate"), env=api_env, cwd=tmp_path)
        assert migrate.popen.wait(120) == 0, migrate.log_tail()
        port = free_port()
        self.api = processes.start(
            "api",
            backprop_command("api", "--host", "127.0.0.1", "--port", str(port)),
            env=api_env,
            cwd=tmp_path,
        )
        self.workers = {host: self._start_worker(host) for host in HOSTS}
        self.client = BackpropClient(f"http://127.0.0.1:{port}", API_KEY)
        self.store = JobStore(self.shared["BACKPROP_DATABASE_URL"])
        wait_until(self.client.ready, START_SECONDS, what="/readyz", watch=[self.api])

    def data_dir(self, host: str) -> Path:
        return self.root / host

    def _env(self, host: str) -> dict[str, str]:
        return clean_environment(
            **self.shared, BACKPROP_DATA_DIR=str(self.data_dir(host)), BACKPROP_WORKER_NAME=host
        )

    def _start_worker(self, host: str) -> ManagedProcess:
        return self.processes.start(
            f"worker-{host}",
            backprop_command("worker", "--queues", "cpu", "--concurrency", "1"),
            env=self._env(host),
            cwd=self.root,
        )

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture
def hosts(
    processes: Processes,
    postgres: PostgresServer,
    redis_server: RedisServer,
    s3_server: S3Server,
    tmp_path: Path,
) -> Iterator[ManyHosts]:
    started = ManyHosts(processes, postgres, redis_server, s3_server, tmp_path)
    try:
        yield started
    finally:
        started.close()


def _upload_digits(client: BackpropClient) -> str:
    digits = load_builtin("digits")
    buffer = io.BytesIO()
    np.savez(buffer, x=np.asarray(digits.x).reshape(len(digits.x), -1), y=np.asarray(digits.y))
    response = client.http.post(
        "/v1/datasets", files={"file": ("digits.npz", buffer.getvalue())}, data={"name": "digits"}
    )
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def _spec(dataset_id: str, epochs: int) -> dict[str, Any]:
    spec = {**LONG_DIGITS_MLP, "dataset": dataset_id}
    spec["model"] = {**spec["model"], "layers": spec["model"]["layers"][1:]}  # no flatten
    spec["training"] = {**spec["training"], "epochs": epochs}
    return spec


def _own_files(directory: Path) -> list[str]:
    """Files a host keeps of the stored ones outside its cache and scratch folders."""
    if not directory.exists():
        return []
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path.relative_to(directory).parts[0] in ("datasets", "jobs")
    )


def test_jobs_run_on_both_hosts_and_a_killed_host_s_job_resumes_on_the_other(
    hosts: ManyHosts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client, store = hosts.client, hosts.store
    dataset_id = _upload_digits(client)
    epochs = 12

    # Four jobs at once: both hosts train, each reading the dataset from the bucket.
    reference, *others = [client.submit(_spec(dataset_id, epochs))["id"] for _ in range(4)]
    finished = [client.wait_for_job(job, "succeeded", JOB_SECONDS) for job in (reference, *others)]
    assert {job["worker"] for job in finished} == set(HOSTS)  # concurrency 1: named by host
    expected = load(client.model(reference))

    # A job whose host dies mid-job: the other host resumes it from the bucket.
    job_id = client.submit(_spec(dataset_id, epochs))["id"]
    client.wait_for_progress(job_id, epoch=3, timeout=JOB_SECONDS)
    wait_until(
        lambda: (store.job(job_id)["checkpoint_epoch"] or 0) >= 3, JOB_SECONDS, what="a checkpoint"
    )
    running_on = store.job(job_id)["worker"]
    hosts.workers[running_on].kill_group()
    job = client.wait_for_job(job_id, "succeeded", JOB_SECONDS)
    assert job["worker"] == next(host for host in HOSTS if host != running_on)
    rows, distinct = store.metric_counts(job_id)
    assert rows == distinct, "a metric (name, step) was written twice"
    resumed = load(client.model(job_id))
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        np.testing.assert_array_equal(resumed[name], tensor, err_msg=name)

    # Nothing stored lives on a host's own disk: the API's and the workers' data
    # directories hold only caches and scratch space …
    for host in ("api", *HOSTS):
        assert _own_files(hosts.data_dir(host)) == [], host
    # … and the bucket holds the dataset, each job's model and its newest checkpoints.
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = storage_for(
        Settings(
            data_dir=tmp_path / "reader",
            storage_url=hosts.shared["BACKPROP_STORAGE_URL"],
            s3_endpoint_url=hosts.shared["BACKPROP_S3_ENDPOINT_URL"],
        )
    )
    assert len(list(bucket.keys(f"datasets/{dataset_id}"))) == 3  # x.npy, y.npy, meta.json
    stored = list(bucket.keys(f"jobs/{job_id}"))
    assert [key for key in stored if "/model-" in key] == [store.job(job_id)["model_path"]]
    checkpoints = [key for key in stored if "/checkpoints/" in key]
    assert store.job(job_id)["checkpoint_path"] in checkpoints and len(checkpoints) <= 2
