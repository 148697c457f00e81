"""The chaos suite: real PostgreSQL, Redis and Backprop processes, and what goes wrong with
them in production (a backend restarted, a worker killed or stopped, a full disk, many
clients at once). Every scenario ends with the same questions: did every job end as it
should, with one metrics row per epoch, none lost and none run twice?"""

from __future__ import annotations

from tests.integration.conftest import deployment, postgres, redis_server
from tests.integration.processes import processes, pytest_runtest_makereport

__all__ = ["deployment", "postgres", "processes", "pytest_runtest_makereport", "redis_server"]
