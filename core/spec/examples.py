"""Example specs: API.md's digits CNN, used in the OpenAPI docs and throughout the tests."""

from __future__ import annotations

from typing import Any

DIGITS_CNN: dict[str, Any] = {
    "name": "digits-cnn",
    "dataset": "builtin:digits",
    "validation": {"split": 0.1},
    "model": {
        "layers": [
            {"type": "conv2d", "filters": 16, "kernel_size": 3, "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "training": {
        "epochs": 20,
        "batch_size": 64,
        "shuffle": True,
        "seed": 0,
        "early_stopping": {"monitor": "val_loss", "patience": 3},
    },
    "device": "auto",
}
