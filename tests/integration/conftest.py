"""Integration fixtures: a real PostgreSQL and Redis per test session (per xdist worker),
and a deployment per test: `server` (those plus `backprop api` and `backprop worker`) or
`embedded` (`backprop serve`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deployments import Deployment, EmbeddedDeployment, ServerDeployment
from tests.integration.processes import Processes, processes, pytest_runtest_makereport
from tests.servers import PostgresServer, RedisServer

__all__ = ["processes", "pytest_runtest_makereport"]  # the fixture and the log hook


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["server", "embedded"])
def deployment(
    request: pytest.FixtureRequest, processes: Processes, tmp_path: Path
) -> Iterator[Deployment]:
    """A fresh deployment of either kind, with its own database, queues and data directory."""
    started: Deployment
    if request.param == "server":
        postgres = request.getfixturevalue("postgres")
        redis_server = request.getfixturevalue("redis_server")
        started = ServerDeployment(processes, postgres, redis_server, tmp_path)
    else:
        started = EmbeddedDeployment(processes, tmp_path)
    try:
        yield started
    finally:
        started.close()
