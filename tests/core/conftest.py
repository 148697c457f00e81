"""Fixtures for the engine's tests; their specs are in tests/specs.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.spec.examples import DIGITS_CNN


@pytest.fixture
def cnn_spec() -> dict[str, Any]:
    return copy.deepcopy(DIGITS_CNN)
