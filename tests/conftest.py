"""Suite-wide settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.runtime import enable_compilation_cache
from tests.object_store import S3Server


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Many tests train the same small models; identical programs compile once per session.
    enable_compilation_cache(tmp_path_factory.mktemp("jax-cache"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on loopback, for the object-storage tests (a bucket per test)."""
    server = S3Server.start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


# Each suite's run time at the end of the run (the chaos and contract suites' budgets are
# watched in CI): the durations of its tests' set-up, call and tear-down, summed.
_suite_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("::")[0].split("/")
    suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else "(top level)"
    _suite_seconds[suite] = _suite_seconds.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _suite_seconds:
        return
    terminalreporter.section("run time per suite (tests' durations summed)")
    for suite, seconds in sorted(_suite_seconds.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{suite:<16} {seconds:8.1f} s")
