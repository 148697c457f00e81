"""Suite-wide settings."""

from __future__ import annotations

import pytest

from core.runtime import enable_compilation_cache


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Many tests train the same small models; identical programs compile once per session.
    enable_compilation_cache(tmp_path_factory.mktemp("jax-cache"))
