"""Every optimizer and schedule of the spec builds, trains and reports its learning rate."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pytest

from core.data import load_builtin
from core.losses import loss_fn
from core.model import Model
from core.optimizers import OPTIMIZERS, SCHEDULES, build_optimizer, current_learning_rate
from core.spec import parse_spec
from core.train import train
from core.train.step import Batching, TrainState, make_chunk_fn
from tests.specs import mlp


def iris_spec(optimizer: dict[str, Any], epochs: int = 5) -> Any:
    return parse_spec(
        mlp(
            "builtin:iris",
            [16, 3],
            activation="tanh",
            optimizer=optimizer,
            training={"epochs": epochs, "batch_size": 16, "seed": 0},
        )
    )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_lowers_the_loss(name: str) -> None:
    extra = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
    spec = iris_spec(
        {"type": name, "learning_rate": 0.01, "clip_norm": 1.0, "weight_decay": 1e-4, **extra},
        epochs=8,
    )
    result = train(spec, load_builtin("iris"))
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def _rate_after(schedule: dict[str, Any], steps: int) -> float:
    spec = iris_spec({"type": "sgd", "learning_rate": schedule})
    tx = build_optimizer(spec.optimizer, total_steps=100)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    for _ in range(steps):
        _, state = tx.update({"w": jnp.ones(2)}, state, params)
    return float(current_learning_rate(state))


@pytest.mark.parametrize(
    ("schedule", "steps", "expected"),
    [
        ({"type": "constant", "value": 0.3}, 5, 0.3),
        ({"type": "step", "init_value": 1.0, "step_size": 3, "gamma": 0.5}, 7, 0.25),
        (
            {"type": "exponential", "init_value": 1.0, "transition_steps": 10, "decay_rate": 0.5},
            11,
            0.5,
        ),
        ({"type": "cosine", "init_value": 1.0}, 51, 0.5),  # halfway through 100 total steps
        ({"type": "warmup_cosine", "peak_value": 1.0, "warmup_steps": 10}, 6, 0.5),
    ],
)
def test_schedules(schedule: dict[str, Any], steps: int, expected: float) -> None:
    # inject_hyperparams records the rate used by the last update (step count − 1).
    assert _rate_after(schedule, steps) == pytest.approx(expected, rel=1e-4)


def test_every_schedule_is_tested() -> None:
    assert set(SCHEDULES) == {"constant", "step", "exponential", "cosine", "warmup_cosine"}


def test_learning_rate_is_recorded_each_epoch() -> None:
    spec = iris_spec(
        {
            "type": "adam",
            "learning_rate": {"type": "step", "init_value": 0.1, "step_size": 10, "gamma": 0.1},
        }
    )
    history = train(spec, load_builtin("iris")).history
    rates = [epoch["learning_rate"] for epoch in history]
    assert rates[0] == pytest.approx(0.1) and rates[-1] < rates[0]


def test_learning_rate_is_traced_so_the_program_is_shared() -> None:
    """Jobs differing only in learning rate lower to the same HLO (one compile-cache entry)."""
    texts = []
    for rate in (0.1, 0.001):
        spec = iris_spec({"type": "adam", "learning_rate": rate})
        model = Model(spec.model)
        params, state = model.init(jax.random.PRNGKey(0), (4,))
        tx = build_optimizer(spec.optimizer, 10)
        batching = Batching.for_size(150, 16)
        fn = make_chunk_fn(model, loss_fn(spec.loss), {}, tx, batching, 4)
        args = (
            TrainState(params, state, tx.init(params)),
            jnp.zeros((150, 4)),
            jnp.zeros(150, jnp.int32),
            jax.random.PRNGKey(0),
            jnp.arange(150),
            jnp.int32(0),
        )
        texts.append(fn.lower(*args).as_text())
    assert texts[0] == texts[1]
