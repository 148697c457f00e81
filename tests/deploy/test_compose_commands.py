"""docker-compose.yml's commands, run for real without Docker.

The compose file is read as Compose reads it (`.env.example` plus test secrets as `.env`);
Redis runs the `redis` service's own command, PostgreSQL is a local server with the
`postgres` service's role and database. Each Backprop service then runs its exact
`command` with its `environment`, with what Docker would provide mapped onto this machine:
service host names → the local servers' ports, named volumes → directories, published
ports → free local ports, container host names → `BACKPROP_WORKER_NAME`.

`migrate` completes, `api` answers `/readyz` (and the image's HEALTHCHECK passes), two
`worker` replicas and `worker-gpu` (CPU platform forced) consume their queues: a `cpu` and
an `auto` job run on the two CPU workers, and a `gpu` job waits until `worker-gpu` starts.
A compose change that breaks one of these commands fails here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from celery import Celery

from tests.deploy.compose import (
    DOCKERFILE,
    ENV_EXAMPLE,
    backprop_services,
    container_port,
    load_compose,
    read_env_file,
)
from tests.deploy.dockerfile import dockerfile_stages, healthcheck_command
from tests.integration.client import TERMINAL, BackpropClient, JobStore
from tests.integration.processes import ManagedProcess, Processes, backprop_command
from tests.integration.processes import clean_environment as host_environment
from tests.servers import PG_USER, PostgresServer, free_port, require_binary, wait_until
from tests.specs import XOR

SECRETS = {
    "POSTGRES_PASSWORD": "composetestpg",
    "REDIS_PASSWORD": "composetestredis",
    "BACKPROP_BOOTSTRAP_API_KEY": "bp_compose_test_key",
}
SERVICES_RUN_HERE = {"migrate", "api", "worker", "worker-gpu"}
START_SECONDS = 90  # generous: two cores may be busy with the rest of the suite
JOB_SECONDS = 120
# A short job; 30 epochs keep it to about a second once compiled.
QUICK_XOR = {**XOR, "training": {**XOR["training"], "epochs": 30, "checkpoint_every_epochs": 10}}


class ComposeHost:
    """What Docker provides a service, mapped onto this machine."""

    def __init__(self, root: Path):
        self.root = root
        self.servers: dict[str, tuple[int, int]] = {}  # service → (container port, local port)

    def serve(self, service: str, container: int, local: int) -> None:
        self.servers[service] = (container, local)

    def environment(self, spec: Mapping[str, Any], **extra: str) -> dict[str, str]:
        volumes = self._volume_directories(spec)
        env = {
            key: self._localize(str(value), volumes) for key, value in spec["environment"].items()
        }
        return host_environment(**env, **extra)

    def argv(self, name: str, spec: Mapping[str, Any]) -> tuple[list[str], int | None]:
        """The service's command on this machine, and the local port it serves on, if any."""
        command = [*spec.get("entrypoint", []), *spec["command"]]
        assert all(isinstance(arg, str) for arg in command), f"{name}: use the exec (list) form"
        assert command[0] == "backprop", f"{name}: runs {command[0]!r}, not the backprop CLI"
        published = {container_port(p) for p in spec.get("ports", [])}
        local_port = None
        argv = list(command[1:])
        for i, arg in enumerate(argv[:-1]):
            if arg == "--host":
                argv[i + 1] = "127.0.0.1"  # the container's interfaces: loopback here
            elif arg == "--port":
                assert int(argv[i + 1]) in published, f"{name}: --port {argv[i + 1]} unpublished"
                local_port = free_port()
                argv[i + 1] = str(local_port)
        return backprop_command(*argv), local_port

    def local_url(self, postgres: Mapping[str, Any]) -> str:
        """A URL of the `postgres` service's database, as this machine reaches it."""
        _, port = self.servers["postgres"]
        database = postgres["environment"]["POSTGRES_DB"]
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/{database}"

    def _volume_directories(self, spec: Mapping[str, Any]) -> dict[str, Path]:
        mounts = {}
        for volume in spec.get("volumes", []):
            if isinstance(volume, str):  # NAME:/path (tmpfs mounts have no effect here)
                name, target = volume.split(":")[:2]
                mounts[target] = self.root / "volumes" / name
        return mounts

    def _localize(self, value: str, volumes: Mapping[str, Path]) -> str:
        for target, directory in volumes.items():
            if value == target or value.startswith(target + "/"):
                return str(directory) + value[len(target) :]
        url = urlsplit(value)
        if url.scheme and url.hostname in self.servers:
            container, local = self.servers[url.hostname]
            assert url.port == container, f"{value}: {url.hostname} listens on {container}"
            credentials = url.netloc.rpartition("@")[0]
            netloc = f"{credentials}@127.0.0.1:{local}" if credentials else f"127.0.0.1:{local}"
            return urlunsplit(url._replace(netloc=netloc))
        return value


@pytest.fixture
def postgres_server() -> Any:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


def start_redis(
    compose: Mapping[str, Any], host: ComposeHost, processes: Processes, tmp_path: Path
) -> redis.Redis:
    """The `redis` service's own command, on a free local port."""
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    binary = require_binary("redis-server", "apt-get install redis-server")
    port, directory = free_port(), tmp_path / "redis"
    directory.mkdir()
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    process = processes.start(
        "redis", [binary, *command[1:], *local], env=host_environment(), cwd=directory
    )
    host.serve("redis", 6379, port)
    client = redis.Redis(port=port, password=SECRETS["REDIS_PASSWORD"], socket_timeout=5)
    wait_until(lambda: _pings(client), START_SECONDS, what="redis to answer", watch=[process])
    return client


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def start_postgres(compose: Mapping[str, Any], host: ComposeHost, server: PostgresServer) -> None:
    """A database and role as the `postgres` service's image creates them."""
    env = compose["services"]["postgres"]["environment"]
    assert env["POSTGRES_USER"] == PG_USER
    with psycopg.connect(
        host="127.0.0.1", port=server.port, user=PG_USER, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}"')
    host.serve("postgres", 5432, server.port)


def answering_workers(broker_url: str, expected: set[str]) -> bool:
    celery = Celery("compose-test", broker=broker_url)
    try:
        replies = celery.control.ping(timeout=1.0)
    finally:
        celery.close()
    return {name for reply in replies for name in reply} >= expected


def test_compose_services_run_as_written(
    processes: Processes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    compose = load_compose(read_env_file(ENV_EXAMPLE) | SECRETS)
    services = backprop_services(compose)
    assert set(services) == SERVICES_RUN_HERE, "a new Backprop service: run it here too"
    host = ComposeHost(tmp_path)
    broker = start_redis(compose, host, processes, tmp_path)
    assert broker.config_get("appendonly") == {"appendonly": "yes"}
    assert broker.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    start_postgres(compose, host, postgres_server)
    workdir = tmp_path / "app"
    workdir.mkdir()

    argv, _ = host.argv("migrate", services["migrate"])
    migrate = subprocess.run(
        argv, env=host.environment(services["migrate"]), cwd=workdir, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}{migrate.stderr}"

    argv, port = host.argv("api", services["api"])
    api = processes.start("api", argv, env=host.environment(services["api"]), cwd=workdir)
    client = BackpropClient(f"http://127.0.0.1:{port}", SECRETS["BACKPROP_BOOTSTRAP_API_KEY"])
    wait_until(client.ready, START_SECONDS, what="the api's /readyz", watch=[api])
    assert_image_healthcheck_passes(port)

    def start(service: str, name: str, **extra: str) -> ManagedProcess:
        """A container of `service` whose host name is `name`."""
        spec = services[service]
        argv, _ = host.argv(service, spec)
        env = host.environment(spec, BACKPROP_WORKER_NAME=name, **extra)
        return processes.start(name, argv, env=env, cwd=workdir)

    workers = [start("worker", f"worker-{i}") for i in (1, 2)]
    broker_url = host.environment(services["worker"])["BACKPROP_BROKER_URL"]
    cpu_names = {"backprop@worker-1", "backprop@worker-2"}
    wait_until(
        lambda: answering_workers(broker_url, cpu_names), START_SECONDS,
        what="both CPU workers to answer on the broker", watch=workers, interval=0.5,
    )  # fmt: skip

    gpu_job = client.submit({**QUICK_XOR, "device": "gpu"})["id"]
    cpu_job = client.submit({**QUICK_XOR, "device": "cpu"})["id"]
    auto_job = client.submit({**QUICK_XOR, "device": "auto"})["id"]
    done = [succeeded(client, job, watch=[api, *workers]) for job in (cpu_job, auto_job)]
    # Prefetch 1 and acks late: each idle replica takes one of the two waiting jobs.
    assert {job["worker"] for job in done} == {"worker-1", "worker-2"}
    assert done[1]["device"] == "cpu"  # `auto` with no GPU worker up runs on a CPU worker
    assert client.job(gpu_job)["status"] == "queued"  # nobody consumes `gpu` yet

    gpu_worker = start("worker-gpu", "worker-gpu-1", JAX_PLATFORMS="cpu")
    gpu_done = succeeded(client, gpu_job, watch=[api, gpu_worker])
    assert gpu_done["worker"] == "worker-gpu-1"  # its `device` says cpu: JAX_PLATFORMS=cpu
    client.close()
    # The jobs live in the `postgres` service's database (not an SQLite fallback).
    store = JobStore(host.local_url(compose["services"]["postgres"]))
    try:
        assert {store.job(job)["status"] for job in (cpu_job, auto_job, gpu_job)} == {"succeeded"}
    finally:
        store.close()


def succeeded(
    client: BackpropClient, job_id: str, watch: Sequence[ManagedProcess]
) -> dict[str, Any]:
    """Wait for the job to succeed; fail at once if it ends otherwise or a process exits."""

    def finished() -> dict[str, Any] | None:
        job = client.job(job_id)
        if job["status"] in TERMINAL and job["status"] != "succeeded":
            raise AssertionError(f"job {job_id} ended {job['status']}: {job['error']}")
        return job if job["status"] == "succeeded" else None

    job: dict[str, Any] = wait_until(
        finished, JOB_SECONDS, what=f"job {job_id} to succeed", watch=watch, interval=0.2
    )
    return job


def assert_image_healthcheck_passes(api_port: int | None) -> None:
    """The Dockerfile's HEALTHCHECK, against this API (its port mapped)."""
    argv = healthcheck_command(dockerfile_stages(DOCKERFILE.read_text()), "cpu")
    assert argv[0] == "python"
    local = [sys.executable, *(arg.replace(":8000/", f":{api_port}/") for arg in argv[1:])]
    assert local != [sys.executable, *argv[1:]], "the health check does not probe port 8000"
    probe = subprocess.run(local, capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
