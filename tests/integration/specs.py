"""Job specs small enough for two busy cores."""

from __future__ import annotations

from typing import Any

XOR: dict[str, Any] = {
    "name": "xor",
    "dataset": "builtin:xor",
    "model": {
        "layers": [
            {"type": "dense", "units": 8, "activation": "tanh"},
            {"type": "dense", "units": 2},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.05},
    "training": {
        "epochs": 100,
        "batch_size": "full",
        "seed": 0,
        "log_every_steps": 5,
        "checkpoint_every_epochs": 25,
    },
    "device": "cpu",
}

DIGITS_MLP: dict[str, Any] = {
    "name": "digits-mlp",
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
    "optimizer": {"type": "adam", "learning_rate": 0.003},
    "training": {"epochs": 8, "batch_size": 64, "seed": 0},
    "device": "cpu",
}

# About a quarter of a second per epoch on one core, checkpointed after every epoch:
# long enough to cancel it or kill its worker part-way, short enough to finish.
LONG_DIGITS_MLP: dict[str, Any] = {
    "name": "digits-mlp-long",
    "dataset": "builtin:digits",
    "model": {
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 512, "activation": "relu"},
            {"type": "dense", "units": 512, "activation": "relu"},
            {"type": "dense", "units": 10},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "training": {"epochs": 40, "batch_size": 8, "seed": 0, "checkpoint_every_epochs": 1},
    "device": "cpu",
}

# Series recorded once per epoch (docs/engine.md, "Metric names").
EPOCH_SERIES = ("epoch_loss", "accuracy")
