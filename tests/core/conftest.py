"""Shared helpers for the engine's tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.spec.examples import DIGITS_CNN


def digits_mlp(**training: Any) -> dict[str, Any]:
    return {
        "dataset": "builtin:digits",
        "validation": {"split": 0.1},
        "model": {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 64, "activation": "relu"},
                {"type": "dense", "units": 10},
            ]
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "training": {"epochs": 3, "batch_size": 64, **training},
    }


@pytest.fixture
def cnn_spec() -> dict[str, Any]:
    return copy.deepcopy(DIGITS_CNN)
