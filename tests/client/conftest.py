"""One `backprop serve` for the client tests of a test session (per xdist worker), and the
client that the Python API tests use against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backprop_client import Client, resolve_connection
from tests.integration.deployments import EmbeddedDeployment
from tests.integration.processes import PROCESSES, Processes, pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]  # attaches the server's log to a failed test


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    log_dir = tmp_path_factory.mktemp("client-logs")
    registry = Processes(log_dir)
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture(scope="session")
def shared_serve(
    served_registry: Processes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedDeployment]:
    """The server itself, for module-scoped fixtures; tests take `served`."""
    deployment = EmbeddedDeployment(served_registry, tmp_path_factory.mktemp("served"))
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture
def served(
    request: pytest.FixtureRequest, shared_serve: EmbeddedDeployment, served_registry: Processes
) -> EmbeddedDeployment:
    """`backprop serve --data-dir DIR` (shared); a failed test shows its log."""
    request.node.stash[PROCESSES] = served_registry
    return shared_serve


@pytest.fixture
def data_dir(served: EmbeddedDeployment) -> Path:
    """The served data directory: `api_key` and `server.json` are in it."""
    return served.data_dir


@pytest.fixture
def client(data_dir: Path) -> Iterator[Client]:
    """A `Client` that finds the server as a user's would, from its data directory (and not
    from any BACKPROP_URL / BACKPROP_API_KEY of the environment the tests run in)."""
    connection = resolve_connection(data_dir=data_dir, environ={})
    with Client(connection.url, connection.api_key) as connected:
        yield connected
