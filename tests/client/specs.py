"""Data and specs for the client tests: small enough for two busy cores."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.integration.specs import LONG_DIGITS_MLP, XOR

__all__ = ["LONG_DIGITS_MLP", "XOR", "write_xor_csv", "xor_spec"]

XOR_INPUTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
XOR_CLASSES = [0, 1, 1, 0]

# The same network as XOR, on an uploaded CSV, written as a user writes YAML.
CSV_SPEC_YAML = """\
name: xor-from-csv
dataset: set by --dataset
model:
  layers:
    - {type: dense, units: 8, activation: tanh}
    - {type: dense, units: 2}
loss: cross_entropy
metrics: [accuracy]
optimizer: {type: adam, learning_rate: 0.05}
training: {epochs: 60, batch_size: full, seed: 0, log_every_steps: 5}
device: cpu
"""


def xor_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(XOR)
    spec.update(changes)
    return spec


def write_xor_csv(path: Path) -> Path:
    """XOR's truth table ten times over, with the class as a word (`class_names`)."""
    rows = [f"{a:g},{b:g},{'same' if a == b else 'different'}" for a, b in XOR_INPUTS] * 10
    path.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    return path
