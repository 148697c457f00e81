"""The two ways to run Backprop, started for real as subprocesses.

- `ServerDeployment`: PostgreSQL + Redis, `backprop migrate`, `backprop api` and one
  `backprop worker --queues cpu --concurrency 1` (what compose runs).
- `EmbeddedDeployment`: `backprop serve --data-dir DIR --port PORT` (SQLite and the
  filesystem broker under DIR; the key read from `DIR/api_key`).

Both use short leases so that a killed worker's job is re-queued within seconds. A test
sees them through `client` (REST, like a user) and `store` (the database), and can crash
the worker (`crash_worker`: SIGKILL of its whole process group) and start a new one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Protocol

from tests.integration.client import BackpropClient, JobStore
from tests.integration.processes import (
    ManagedProcess,
    Processes,
    backprop_command,
    clean_environment,
)
from tests.servers import PostgresServer, RedisServer, free_port, wait_until

# Short enough that a lost worker's job is re-queued within a few seconds.
FAST_LEASES = {
    "BACKPROP_LEASE_SECONDS": "3",
    "BACKPROP_HEARTBEAT_SECONDS": "1",
    "BACKPROP_RECONCILE_SECONDS": "1",
}
START_SECONDS = 90  # generous: two cores may be busy with the rest of the suite
API_KEY = "bp_integration_test_key"


class Deployment(Protocol):
    mode: str
    client: BackpropClient
    store: JobStore

    def crash_worker(self) -> None:
        """SIGKILL the worker: its Celery main process, pool process and training process."""

    def start_worker(self) -> None:
        """Start a new worker (after a crash)."""

    def training_processes(self) -> list[int]:
        """The worker's live training processes (`python -m worker.train_process`)."""

    def close(self) -> None: ...


class ServerDeployment:
    mode = "server"

    def __init__(
        self,
        processes: Processes,
        postgres: PostgresServer,
        redis: RedisServer,
        tmp_path: Path,
        *,
        worker_concurrency: int = 1,
        **settings: str,
    ):
        """`settings`: `BACKPROP_*` variables over FAST_LEASES (e.g. a longer lease);
        `worker_concurrency`: the jobs each `backprop worker` runs at once."""
        self.processes = processes
        self.worker_concurrency = worker_concurrency
        self.cwd = tmp_path
        database_url = postgres.create_database()
        self.env = clean_environment(
            BACKPROP_DATABASE_URL=database_url,
            BACKPROP_BROKER_URL=redis.new_broker_url(),
            BACKPROP_DATA_DIR=str(tmp_path / "data"),
            BACKPROP_BOOTSTRAP_API_KEY=API_KEY,
            **{**FAST_LEASES, **settings},
        )
        migrate = subprocess.run(
            backprop_command("migrate"),
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrate.returncode == 0, f"backprop migrate failed:\n{migrate.stderr}"
        self.port = free_port()
        self.apis: list[ManagedProcess] = []
        self._start_api()
        self.workers: list[ManagedProcess] = []
        self.start_worker()
        self.client = BackpropClient(f"http://127.0.0.1:{self.port}", API_KEY)
        self.store = JobStore(database_url)
        wait_until(self.client.ready, START_SECONDS, what="/readyz", watch=[self.api])

    @property
    def api(self) -> ManagedProcess:
        return self.apis[-1]

    def _start_api(self) -> None:
        self.apis.append(
            self.processes.start(
                f"api-{len(self.apis) + 1}",
                backprop_command("api", "--host", "127.0.0.1", "--port", str(self.port)),
                env=self.env,
                cwd=self.cwd,
            )
        )

    def restart_api(self) -> None:
        """SIGKILL the API (its reconciler with it) and start a new one on the same port."""
        self.api.kill_group()
        self._start_api()
        wait_until(self.client.ready, START_SECONDS, what="/readyz", watch=[self.api])

    @property
    def worker(self) -> ManagedProcess:
        return self.workers[-1]

    def start_worker(self) -> None:
        name = f"worker-{len(self.workers) + 1}"
        self.workers.append(
            self.processes.start(
                name,
                backprop_command(
                    "worker", "--queues", "cpu", "--concurrency", str(self.worker_concurrency)
                ),
                env={**self.env, "BACKPROP_WORKER_NAME": name},
                cwd=self.cwd,
            )
        )

    def crash_worker(self) -> None:
        self.worker.kill_group()

    def training_processes(self) -> list[int]:
        return _training_processes(self.worker)

    def close(self) -> None:
        self.client.close()
        self.store.close()


class EmbeddedDeployment:
    mode = "embedded"

    def __init__(self, processes: Processes, tmp_path: Path, **settings: str):
        """`settings`: `BACKPROP_*` variables over FAST_LEASES (e.g. a longer lease)."""
        self.processes = processes
        self.settings = settings
        self.cwd = tmp_path
        self.data_dir = tmp_path / "data"
        self.servers: list[ManagedProcess] = []
        self.client = self._serve()
        self.store = JobStore(f"sqlite:///{self.data_dir / 'backprop.db'}")

    @property
    def server(self) -> ManagedProcess:
        return self.servers[-1]

    def _serve(self) -> BackpropClient:
        """`backprop serve` (API + worker) on a new port; a client with the saved key."""
        name = f"serve-{len(self.servers) + 1}"
        port = free_port()
        server = self.processes.start(
            name,
            backprop_command("serve", "--data-dir", str(self.data_dir), "--port", str(port)),
            env=clean_environment(BACKPROP_WORKER_NAME=name, **{**FAST_LEASES, **self.settings}),
            cwd=self.cwd,
        )
        self.servers.append(server)
        key_file = self.data_dir / "api_key"
        wait_until(key_file.exists, START_SECONDS, what=f"{key_file}", watch=[server])
        client = BackpropClient(f"http://127.0.0.1:{port}", key_file.read_text().strip())
        wait_until(client.ready, START_SECONDS, what="/readyz", watch=[server])
        return client

    def crash_worker(self) -> None:
        """The embedded worker is a child of `serve`: SIGKILL the whole of it, as a crash of
        the machine or an OOM kill of the session would."""
        self.server.kill_group()

    def start_worker(self) -> None:
        """Start `backprop serve` again on the same data directory."""
        self.client.close()
        self.client = self._serve()

    def training_processes(self) -> list[int]:
        return _training_processes(self.server)

    def close(self) -> None:
        self.client.close()
        self.store.close()


def _training_processes(group: ManagedProcess) -> list[int]:
    return [pid for pid, cmd in group.group_commands().items() if "worker.train_process" in cmd]
