"""Many epochs per dispatch: the same run, bit for bit, as one epoch at a time.

The reference is a run in chunks of 3 steps: every epoch runs as several dispatches and
ends on its own (`chunk_steps` < steps per epoch), which is how the loop ran every epoch
before chunks could span epochs. Each stop rule is made to fire in the middle of a chunk
of many epochs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.data import load_builtin
from core.errors import TrainingError
from core.spec import parse_spec
from core.train import Callbacks, MetricSeries, TrainResult, train
from tests.core.test_training import assert_same_params, deterministic
from tests.specs import mlp

STEPS_PER_EPOCH = 8  # 120 training examples of iris in batches of 16
REFERENCE = 3  # steps per dispatch: every epoch in three parts
# One epoch, three epochs (stops and the end fall inside a chunk), up to 64 epochs.
SPANNING = [STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH, 64 * STEPS_PER_EPOCH]


def iris_net(**training: Any) -> dict[str, Any]:
    """Iris through batch norm and dropout (the state and the PRNG both matter), with a
    validation split so early stopping and stop_when can watch val_* metrics."""
    spec = mlp(
        "builtin:iris",
        [16, 3],
        metrics=["accuracy"],
        validation={"split": 0.2},
        optimizer={"type": "adam", "learning_rate": 0.01},
        training={"epochs": 40, "batch_size": 16, "seed": 3, **training},
    )
    spec["model"]["layers"][1:1] = [{"type": "batch_norm"}, {"type": "dropout", "rate": 0.2}]
    return spec


# rule -> (training fields, the stop reason, the epochs it runs)
RULES = {
    "none": ({}, "completed", 40),
    "stop_when": ({"stop_when": {"metric": "val_accuracy", "above": 0.9}}, "stop_when", 8),
    "early_stopping": (
        {"early_stopping": {"monitor": "val_loss", "patience": 2, "min_delta": 0.02}},
        "early_stopping",
        13,
    ),
}


def run(data: dict[str, Any], **kwargs: Any) -> TrainResult:
    return train(parse_spec(data), load_builtin("iris"), **kwargs)


def assert_same_run(a: TrainResult, b: TrainResult) -> None:
    assert (a.stop_reason, a.steps_completed) == (b.stop_reason, b.steps_completed)
    assert deterministic(a.history) == deterministic(b.history)
    assert a.summary["best_epoch"] == b.summary["best_epoch"]
    assert_same_params(a.params, b.params)
    assert_same_params(a.model_state, b.model_state)


@pytest.mark.parametrize("rule", list(RULES))
def test_epochs_per_dispatch_equal_one_epoch_at_a_time(rule: str) -> None:
    fields, stop_reason, epochs = RULES[rule]
    reference = run(iris_net(**fields), chunk_steps=REFERENCE)
    assert (reference.stop_reason, len(reference.history)) == (stop_reason, epochs)
    for chunk_steps in SPANNING:
        assert_same_run(run(iris_net(**fields), chunk_steps=chunk_steps), reference)
    assert_same_run(run(iris_net(**fields)), reference)  # chunks sized by time


def test_a_non_finite_step_fails_at_the_same_epoch_and_step() -> None:
    diverging = {**iris_net(), "optimizer": {"type": "sgd", "learning_rate": 3.0}}
    errors = []
    for chunk_steps in [REFERENCE, *SPANNING]:
        with pytest.raises(TrainingError) as caught:
            run(diverging, chunk_steps=chunk_steps)
        errors.append((caught.value.code, caught.value.epoch, caught.value.step))
    # Which step first overflows moves by a step between machines and XLA builds (it
    # diverged at step 77 in one CI run and at 78 in another); within one process, every
    # chunk size must find the same one, and report its own epoch.
    code, epoch, step = errors[0]
    assert errors == [(code, epoch, step)] * len(errors)
    assert code == "non_finite_loss"
    assert epoch * STEPS_PER_EPOCH <= step < (epoch + 1) * STEPS_PER_EPOCH


class Points(Callbacks):
    """Every metric point reported, and each checkpoint copied aside before it is pruned."""

    def __init__(self, keep: Path | None = None, stop_after_checkpoints: int | None = None):
        self.points: dict[tuple[str, int], float] = {}
        self.repeated: list[tuple[str, int]] = []
        self.keep, self.saved = keep, 0
        self.stop_after = stop_after_checkpoints

    def on_metrics(self, series: list[MetricSeries]) -> None:
        for point in (p for one in series for p in one.points()):
            if (point.name, point.step) in self.points:
                self.repeated.append((point.name, point.step))
            self.points[(point.name, point.step)] = point.value

    def on_checkpoint(self, path: str, epoch: int, step: int) -> None:
        self.saved += 1
        if self.keep is not None:
            shutil.copy(path, self.keep / Path(path).name)

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.saved >= self.stop_after


def test_checkpoints_by_time_and_epochs(tmp_path: Path) -> None:
    by_time = Points()
    run(
        iris_net(checkpoint_every_seconds=1e-9),  # due at every epoch boundary it reaches
        chunk_steps=3 * STEPS_PER_EPOCH,
        checkpoint_dir=tmp_path / "time",
        callbacks=by_time,
    )
    assert by_time.saved == 14  # after each chunk of 3 epochs: 3, 6, …, 39, and 40 at the end

    kept = tmp_path / "kept"
    kept.mkdir()
    run(
        iris_net(checkpoint_every_epochs=5),  # and the default 60 s never comes
        chunk_steps=64 * STEPS_PER_EPOCH,
        checkpoint_dir=tmp_path / "epochs",
        callbacks=Points(keep=kept),
    )
    assert sorted(p.name for p in kept.glob("ckpt-*.npz")) == [
        f"ckpt-{epoch:06d}.npz" for epoch in range(5, 41, 5)
    ]


@pytest.mark.parametrize("chunk_steps", [REFERENCE, 3 * STEPS_PER_EPOCH, 64 * STEPS_PER_EPOCH])
def test_resume_from_any_checkpoint_equals_uninterrupted(tmp_path: Path, chunk_steps: int) -> None:
    data = iris_net(
        checkpoint_every_epochs=7,
        early_stopping={"monitor": "val_loss", "patience": 30, "min_delta": 0.0},
    )
    whole = Points()
    uninterrupted = run(data, chunk_steps=chunk_steps, callbacks=whole)
    kept = tmp_path / "kept"
    kept.mkdir()
    run(data, chunk_steps=chunk_steps, checkpoint_dir=tmp_path / "first", callbacks=Points(kept))
    checkpoints = sorted(kept.glob("ckpt-*.npz"))
    assert len(checkpoints) == 6  # epochs 7, 14, …, 35, and 40

    for checkpoint in checkpoints[:-1]:
        resumed_points = Points()
        resumed = run(
            data,
            chunk_steps=chunk_steps,
            checkpoint_dir=tmp_path / checkpoint.stem,
            resume_from=checkpoint,
            callbacks=resumed_points,
        )
        assert_same_run(resumed, uninterrupted)
        assert not resumed_points.repeated  # each point once, even across chunk kinds
        # It reports exactly the points after its checkpoint, with the same values.
        after = epochs_done(checkpoint) * STEPS_PER_EPOCH
        expected = {k: v for k, v in whole.points.items() if k[1] > after}
        assert set(resumed_points.points) == set(expected)
        assert untimed(resumed_points.points) == untimed(expected)


def epochs_done(checkpoint: Path) -> int:
    return int(checkpoint.stem.removeprefix("ckpt-"))


def untimed(points: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    return {k: v for k, v in points.items() if k[0] not in {"samples_per_second", "epoch_seconds"}}


def test_the_1986_symmetry_network_learns_for_most_seeds() -> None:
    """Rumelhart, Hinton & Williams (1986): 6 inputs, 2 hidden units, 1 output, ε = 0.1,
    α = 0.9, initial weights U(±0.3); solved when every output is on the right side of 0.5."""
    uniform = {"type": "uniform", "low": -0.3, "high": 0.3}
    solved = 0
    for seed in range(10):
        spec = mlp(
            "builtin:symmetry",
            [2, 1],
            activation="sigmoid",
            output_activation="sigmoid",
            loss="sse",
            metrics=["accuracy"],
            optimizer={"type": "sgd", "learning_rate": 0.1, "momentum": 0.9},
            training={
                "epochs": 10_000,
                "batch_size": "full",
                "shuffle": False,
                "seed": seed,
                "stop_when": {"metric": "accuracy", "above": 0.999},
            },
        )
        for layer in spec["model"]["layers"]:
            layer.update(kernel_init=uniform, bias_init=uniform)
        result = train(parse_spec(spec), load_builtin("symmetry"))
        solved += result.stop_reason == "stop_when"
    assert solved >= 8


def test_a_long_run_of_tiny_epochs_reports_every_epoch() -> None:
    points = Points()
    spec = parse_spec(mlp("builtin:xor", [4, 2], training={"epochs": 3000, "batch_size": "full"}))
    result = train(spec, load_builtin("xor"), callbacks=points)
    assert len(result.history) == 3000
    epoch_loss = [points.points[("epoch_loss", step)] for step in range(1, 3001)]
    assert epoch_loss == [row["loss"] for row in result.history]
    assert [step for name, step in points.points if name == "loss"] == list(range(10, 3001, 10))
    assert np.isfinite(epoch_loss).all() and not points.repeated
