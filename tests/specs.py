"""The tests' job specs, in one place: small MLPs on the builtin datasets, small enough for
two busy cores. API.md's digits CNN is a product example: `core.spec.examples.DIGITS_CNN`.

Every call returns a fresh dict, safe to change. The named builders take training fields,
laid over their own; `{**SPEC, "field": ...}` varies the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Spec = dict[str, Any]

# JobSpec's order of fields (API.md), so that specs read and serialise as users write them.
_FIELD_ORDER = ("name", "dataset", "validation", "model", "loss", "metrics", "optimizer")


def mlp(
    dataset: str,
    units: Sequence[int],
    *,
    activation: str = "relu",
    output_activation: str | None = None,
    flatten: bool = False,
    loss: str = "cross_entropy",
    **fields: Any,
) -> Spec:
    """Dense layers of `units` (the last one the output), on `dataset`; `fields` are the
    spec's other top-level fields, exactly as given (none are added)."""
    *hidden, outputs = units
    layers: list[dict[str, Any]] = [{"type": "flatten"}] if flatten else []
    layers += [{"type": "dense", "units": n, "activation": activation} for n in hidden]
    output: dict[str, Any] = {"type": "dense", "units": outputs}
    if output_activation is not None:
        output["activation"] = output_activation
    layers.append(output)
    spec = {"dataset": dataset, "model": {"layers": layers}, "loss": loss, **fields}
    ordered = sorted(spec, key=lambda k: _FIELD_ORDER.index(k) if k in _FIELD_ORDER else 99)
    return {key: spec[key] for key in ordered}


def xor_mlp(**training: Any) -> Spec:
    """builtin:xor, 8 tanh units, adam at 0.05, on the CPU: by default 3 full-batch epochs
    with metrics every step (a job the worker tests run in well under a second)."""
    return mlp(
        "builtin:xor",
        [8, 2],
        activation="tanh",
        metrics=["accuracy"],
        optimizer={"type": "adam", "learning_rate": 0.05},
        training={"epochs": 3, "batch_size": "full", "log_every_steps": 1, **training},
        device="cpu",
    )


def digits_mlp(**training: Any) -> Spec:
    """builtin:digits flattened, 64 relu units, a 10% validation split, the default
    optimizer and device: by default 3 epochs in batches of 64."""
    return mlp(
        "builtin:digits",
        [64, 10],
        flatten=True,
        validation={"split": 0.1},
        metrics=["accuracy"],
        training={"epochs": 3, "batch_size": 64, **training},
    )


# XOR learnt to 100% accuracy, checkpointed every 25 epochs.
XOR: Spec = {
    "name": "xor",
    **xor_mlp(epochs=100, seed=0, log_every_steps=5, checkpoint_every_epochs=25),
}

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

DIGITS_MLP: Spec = {
    "name": "digits-mlp",
    **digits_mlp(epochs=8, seed=0),
    "optimizer": {"type": "adam", "learning_rate": 0.003},
    "device": "cpu",
}

# About a quarter of a second per epoch on one core, checkpointed after every epoch:
# long enough to cancel it or kill its worker part-way, short enough to finish.
LONG_DIGITS_MLP: Spec = mlp(
    "builtin:digits",
    [512, 512, 10],
    flatten=True,
    name="digits-mlp-long",
    metrics=["accuracy"],
    optimizer={"type": "adam", "learning_rate": 0.001},
    training={"epochs": 40, "batch_size": 8, "seed": 0, "checkpoint_every_epochs": 1},
    device="cpu",
)

# A small MLP on iris ([4] features, 3 classes) and nothing else: tensors
# dense_0.{kernel [4, 8], bias [8]} and dense_1.{kernel [8, 3], bias [3]}.
IRIS_MLP: Spec = mlp("builtin:iris", [8, 3])


def diverging_sine_mlp(**training: Any) -> Spec:
    """builtin:sine regressed by SGD at a learning rate of 1e6: the loss overflows to inf
    within the first epoch (a `non_finite_loss` failure)."""
    return mlp(
        "builtin:sine",
        [16, 1],
        loss="mse",
        optimizer={"type": "sgd", "learning_rate": 1e6},
        training={"epochs": 5, "batch_size": 16, **training},
    )


def endless_digits_mlp(**training: Any) -> Spec:
    """LONG_DIGITS_MLP for 100,000 epochs (about a quarter of a second each): a job that is
    still training when a test cancels, stops or kills it, however fast small jobs get."""
    return {
        **LONG_DIGITS_MLP,
        "training": {**LONG_DIGITS_MLP["training"], "epochs": 100_000, **training},
    }
