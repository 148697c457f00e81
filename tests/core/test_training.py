"""The training loop: learning on real data, determinism, resume, stopping rules, hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from core.data import load_builtin
from core.errors import SpecError, TrainingError
from core.spec import parse_spec
from core.train import (
    Callbacks,
    MetricPoint,
    MetricSeries,
    Progress,
    TrainResult,
    latest_checkpoint,
    train,
)
from core.train.checkpoint import prune_checkpoints
from tests.specs import digits_mlp, diverging_sine_mlp, mlp

TIMING = {"samples_per_second", "epoch_seconds"}


def run(data: dict[str, Any], **kwargs: Any) -> TrainResult:
    spec = parse_spec(data)
    return train(spec, load_builtin(spec.dataset.removeprefix("builtin:")), **kwargs)


def deterministic(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in history]


def assert_same_params(a: Any, b: Any) -> None:
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class Recorder(Callbacks):
    def __init__(self, stop_after_chunks: int | None = None):
        self.points: list[MetricPoint] = []
        self.progress: list[Progress] = []
        self.epochs: list[int] = []
        self.checkpoints: list[tuple[int, int]] = []
        self.stop_after_chunks = stop_after_chunks

    def on_metrics(self, series: list[MetricSeries]) -> None:
        self.points += [point for one in series for point in one.points()]

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(epoch)

    def on_checkpoint(self, path: str, epoch: int, step: int) -> None:
        assert Path(path).exists()
        self.checkpoints.append((epoch, step))

    def should_stop(self) -> bool:
        return self.stop_after_chunks is not None and len(self.progress) >= self.stop_after_chunks


def test_xor_2_2_1_sigmoid_full_batch_learns_exactly() -> None:
    result = run(
        mlp(
            "builtin:xor",
            [2, 1],
            activation="sigmoid",
            output_activation="sigmoid",
            loss="sse",
            metrics=["accuracy"],
            optimizer={"type": "sgd", "learning_rate": 0.5, "momentum": 0.9},
            training={
                "epochs": 3000,
                "batch_size": "full",
                "seed": 1,
                "stop_when": {"metric": "loss", "below": 0.01},
            },
        )
    )
    assert result.stop_reason == "stop_when"
    assert result.summary["accuracy"] == 1.0
    assert result.summary["loss"] < 0.01


def test_digits_mlp_reaches_95_percent() -> None:
    data = digits_mlp(epochs=20, batch_size=32)
    data["model"]["layers"][1]["units"] = 128
    result = run(data)
    assert result.summary["val_accuracy"] >= 0.95


def test_digits_cnn_reaches_97_percent(cnn_spec: dict[str, Any]) -> None:
    """API.md's digits CNN, trained a little harder than its example (lr, batch, epochs)."""
    cnn_spec["optimizer"]["learning_rate"] = 0.003
    cnn_spec["training"].update(
        batch_size=32, epochs=40, early_stopping={"monitor": "val_accuracy", "patience": 8}
    )
    result = run(cnn_spec)
    best = result.summary["best_epoch"]
    assert isinstance(best, int)
    assert result.history[best]["val_accuracy"] >= 0.97


def test_same_seed_is_identical_and_another_seed_differs() -> None:
    data = digits_mlp(epochs=2)
    data["model"]["layers"].insert(2, {"type": "dropout", "rate": 0.3})
    first, second = run(data), run(data)
    assert deterministic(first.history) == deterministic(second.history)
    assert_same_params(first.params, second.params)
    data["training"]["seed"] = 1
    other = run(data)
    assert deterministic(other.history) != deterministic(first.history)


def test_results_do_not_depend_on_chunk_size() -> None:
    data = digits_mlp(epochs=2)
    whole = run(data, chunk_steps=1000)
    single = run(data, chunk_steps=1)
    odd = run(data, chunk_steps=7)
    assert (
        deterministic(whole.history) == deterministic(single.history) == deterministic(odd.history)
    )
    assert_same_params(whole.params, single.params)
    assert_same_params(whole.params, odd.params)


@pytest.mark.parametrize("stop_after_chunks", [3, 4])  # at an epoch boundary, mid-epoch
def test_resume_equals_uninterrupted(tmp_path: Path, stop_after_chunks: int) -> None:
    data = digits_mlp(epochs=4, early_stopping={"monitor": "val_loss", "patience": 10})
    data["model"]["layers"].insert(2, {"type": "dropout", "rate": 0.3})
    data["model"]["layers"].insert(2, {"type": "batch_norm"})
    uninterrupted = run(data, chunk_steps=13)  # 26 steps per epoch: 2 chunks
    first = run(
        data,
        chunk_steps=13,
        checkpoint_dir=tmp_path,
        callbacks=Recorder(stop_after_chunks=stop_after_chunks),
    )
    assert first.stop_reason == "cancelled"
    resumed = run(
        data, chunk_steps=13, checkpoint_dir=tmp_path, resume_from=latest_checkpoint(tmp_path)
    )
    assert resumed.stop_reason == "completed"
    assert deterministic(resumed.history) == deterministic(uninterrupted.history)
    assert_same_params(resumed.params, uninterrupted.params)
    assert_same_params(resumed.model_state, uninterrupted.model_state)
    assert resumed.steps_completed == uninterrupted.steps_completed == 4 * 26


def test_non_finite_loss_stops_with_epoch_and_step() -> None:
    data = diverging_sine_mlp()
    with pytest.raises(TrainingError) as caught:
        run(data)
    error = caught.value
    assert error.code == "non_finite_loss"
    assert error.epoch == 0 and error.step is not None and error.step >= 1
    assert f"step {error.step}" in error.message


def test_early_stopping_restores_the_best_epoch() -> None:
    data = digits_mlp(
        epochs=30, early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 0.05}
    )
    data["optimizer"] = {"type": "adam", "learning_rate": 0.01}
    result = run(data)
    assert result.stop_reason == "early_stopping"
    best = result.summary["best_epoch"]
    assert isinstance(best, int) and best < len(result.history) - 1
    # The returned parameters are the best epoch's: evaluating them reproduces its val_loss.
    again = run({**data, "training": {**data["training"], "epochs": 0}}, init_params=result.params)
    assert again.history == []
    val_losses = [epoch["val_loss"] for epoch in result.history]
    assert val_losses[best] == pytest.approx(min(val_losses[: best + 1]), abs=0.05)


def test_stop_when_and_progress_and_metric_points() -> None:
    recorder = Recorder()
    data = digits_mlp(
        epochs=50, log_every_steps=5, stop_when={"metric": "val_accuracy", "above": 0.9}
    )
    result = run(data, callbacks=recorder)
    assert result.stop_reason == "stop_when"
    assert result.history[-1]["val_accuracy"] > 0.9
    assert all(h["val_accuracy"] <= 0.9 for h in result.history[:-1])
    assert recorder.epochs == list(range(len(result.history)))
    loss_steps = [p.step for p in recorder.points if p.name == "loss"]
    assert loss_steps == list(range(5, result.steps_completed + 1, 5))
    epoch_names = {p.name for p in recorder.points if p.name != "loss"}
    assert {
        "epoch_loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "grad_norm",
        "samples_per_second",
        "epoch_seconds",
    } <= epoch_names
    steps = [p.step for p in recorder.progress]
    assert steps == sorted(steps) and steps[-1] == result.steps_completed


def test_max_runtime_is_a_timeout() -> None:
    data = digits_mlp(epochs=10_000, max_runtime_seconds=0.5)
    with pytest.raises(TrainingError) as caught:
        run(data, chunk_steps=4)
    assert caught.value.code == "timeout"


def test_zero_epochs_only_initialises(tmp_path: Path) -> None:
    result = run(digits_mlp(epochs=0), checkpoint_dir=tmp_path)
    assert result.history == [] and result.steps_completed == 0
    assert result.params["dense_1"]["kernel"].shape == (64, 64)


def test_init_from_checks_shapes_and_starts_from_the_parameters() -> None:
    base = run(digits_mlp(epochs=3))
    again = run(digits_mlp(epochs=1), init_params=base.params)
    assert again.history[0]["loss"] < base.history[0]["loss"]
    wider = digits_mlp(epochs=1)
    wider["model"]["layers"][1]["units"] = 32
    with pytest.raises(SpecError) as caught:
        run(wider, init_params=base.params)
    (error,) = caught.value.errors
    assert error.loc == ("init_from", "job")
    assert "[64, 64]" in error.msg and "[64, 32]" in error.msg


def test_validation_split_is_seeded_and_disjoint() -> None:
    from core.train.data import split_validation

    spec = parse_spec(digits_mlp())
    digits = load_builtin("digits")
    train_a, val_a = split_validation(spec, digits, None)
    _train_b, val_b = split_validation(spec, digits, None)
    assert val_a is not None and val_b is not None
    assert len(val_a.x) == round(0.1 * len(digits.x))
    assert len(train_a.x) + len(val_a.x) == len(digits.x)
    np.testing.assert_array_equal(val_a.x, val_b.x)


def test_pruning_keeps_the_checkpoint_just_written_over_an_abandoned_attempts(
    tmp_path: Path,
) -> None:
    # An attempt wrote epochs 5-8 and died before recording them; the next one resumed
    # from epoch 3 and has just written epoch 4: 5-8 are stale, 3 and 4 stay.
    for epoch in range(3, 9):
        (tmp_path / f"ckpt-{epoch:06d}.npz").write_bytes(b"")
    prune_checkpoints(tmp_path, tmp_path / "ckpt-000004.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000003.npz", "ckpt-000004.npz"]
