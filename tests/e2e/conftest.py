"""End-to-end fixtures: the `processes` registry (stopped at the end, logs on failure)."""

from __future__ import annotations

from tests.integration.processes import processes, pytest_runtest_makereport

__all__ = ["processes", "pytest_runtest_makereport"]
