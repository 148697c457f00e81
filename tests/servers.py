"""Real PostgreSQL and Redis servers for the integration tests.

- `PostgresServer`: `initdb` into a fresh temporary directory, `pg_ctl start` on a free port
  of 127.0.0.1 (socket directory in the same temporary directory, trust authentication),
  one database per test. PostgreSQL refuses to run as root, so under root the server runs
  as the `postgres` account (else `nobody`) through `runuser`.
- `RedisServer`: `redis-server` on a free port, no persistence (or, for the chaos tests,
  append-only persistence as the deployment has it), one logical database per test.

The chaos tests stop and restart servers of their own (`stop_server`, `start_again`):
PostgreSQL comes back on the same port and data directory, Redis on the same port and
directory (so an append-only file is read back).

A missing binary fails the test when `BACKPROP_REQUIRE_SERVICES=1` (CI sets it) and skips
it otherwise; either way the message says what to install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import psycopg
import pytest
import redis

REQUIRE_SERVICES = "BACKPROP_REQUIRE_SERVICES"
PG_USER = "backprop"


def missing(what: str, install: str) -> NoReturn:
    """Fail (CI, `BACKPROP_REQUIRE_SERVICES=1`) or skip: `what` is not available."""
    message = f"{what}; install it with `{install}` to run these tests"
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(f"{message} ({REQUIRE_SERVICES}=1 requires them)", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"`{name}` is not on PATH", install)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Watched(Protocol):
    """A started process that a wait gives up on when it exits."""

    name: str
    popen: subprocess.Popen[bytes]

    def log_tail(self) -> str: ...


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    *,
    what: str,
    interval: float = 0.1,
    watch: Sequence[Watched] = (),
) -> Any:
    """Poll `predicate` until it returns something truthy; fail early if a watched process
    exits, and with `what` in the message after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for process in watch:
            if process.popen.poll() is not None:
                raise AssertionError(
                    f"{process.name} exited with status {process.popen.returncode} while "
                    f"waiting for {what}:\n{process.log_tail()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- PostgreSQL -------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: PATH, then `pg_config --bindir`, then Debian's
    versioned directories (newest first)."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(debian, key=_version_key, reverse=True)]
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    missing("no `postgres` or `nobody` account to run PostgreSQL as", "apt-get install postgresql")


@dataclass
class PostgresServer:
    bindir: Path
    root: Path  # data directory, socket directory and log
    port: int
    run_as: list[str]  # empty, or `runuser -u <account> --` when running as root
    _databases: int = 0

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = postgres_bindir()
        if bindir is None:
            missing("PostgreSQL's `initdb`/`pg_ctl` were not found", "apt-get install postgresql")
        root = Path(tempfile.mkdtemp(prefix="backprop-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            account = _unprivileged_account()
            runuser = require_binary("runuser", "apt-get install util-linux")
            os.chown(root, account.pw_uid, account.pw_gid)
            run_as = [runuser, "-u", account.pw_name, "--"]
        server = cls(bindir, root, 0, run_as)
        try:
            server._initdb()
            server._start_on_a_free_port()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, *argv: str | Path, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self.run_as, *map(str, argv)],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-8000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(map(str, argv))} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{tail}"
            )

    def _initdb(self) -> None:
        self._run(
            self.bindir / "initdb",
            *("-D", self.root / "data", "-U", PG_USER, "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        )
        (self.root / "sockets").mkdir()
        shutil.chown(self.root / "sockets", *self._owner())

    def _owner(self) -> tuple[int, int]:
        status = self.root.stat()
        return status.st_uid, status.st_gid

    def _start_on_a_free_port(self, tries: int = 3) -> None:
        for attempt in range(tries):
            self.port = free_port()
            try:
                self._pg_ctl_start()
                return
            except RuntimeError:
                if attempt == tries - 1:
                    raise  # not a lost race for the port

    def _pg_ctl_start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root / 'sockets'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self.bindir / "pg_ctl",
            *("-D", self.root / "data", "-l", self.root / "postgres.log"),
            *("-w", "-t", "60", "-o", options, "start"),
        )

    def stop_server(self) -> None:
        """`pg_ctl stop -m fast`, keeping the data: every session is ended, new connections
        are refused until `start_again`."""
        self._run(self.bindir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        """Start the stopped server on the same port and data directory."""
        self._pg_ctl_start()

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._databases += 1
        name = f"backprop_test_{self._databases}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={database}"

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run(self.bindir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


# -- Redis ------------------------------------------------------------------------------


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    argv: list[str]
    _next_database: int = 0

    @classmethod
    def start(cls, directory: Path, *, append_only: bool = False) -> RedisServer:
        """A new server; `append_only` persists every write as docker-compose's Redis does."""
        binary = require_binary("redis-server", "apt-get install redis-server")
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes" if append_only else "no", "--dir", str(directory)]
        argv += ["--logfile", str(directory / "redis.log")]
        server = cls(cls._spawn(argv), port, argv)
        server._wait_until_up()
        return server

    @staticmethod
    def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def _wait_until_up(self) -> None:
        try:
            wait_until(self._ping, 30, what="redis-server to answer PING")
        except BaseException:
            self.stop()
            raise

    def stop_server(self) -> None:
        """SHUTDOWN, as a restart does: the append-only file, if any, is written out first;
        see `start_again`."""
        with self._client() as client:
            client.shutdown()
        self.process.wait(30)

    def start_again(self) -> None:
        """Start the stopped server on the same port and directory."""
        self.process = self._spawn(self.argv)
        self._wait_until_up()

    def _client(self, database: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=database, socket_timeout=5)

    def _ping(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {self.process.returncode}")
        try:
            with self._client() as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def new_broker_url(self) -> str:
        """An emptied logical database of its own (a test's queues never see another's)."""
        database = self._next_database % 16
        self._next_database += 1
        with self._client(database) as client:
            client.flushdb()
        return f"redis://127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                with self._client() as client:
                    client.shutdown(nosave=True)
            except redis.RedisError:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
