"""Deployment tests: the `processes` fixture (started processes, stopped at the end, their
logs attached to a failure) from the integration tests."""

from __future__ import annotations

from tests.integration.processes import processes, pytest_runtest_makereport

__all__ = ["processes", "pytest_runtest_makereport"]  # the fixture and the log hook
