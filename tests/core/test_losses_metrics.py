"""Losses (values and gradients against finite differences) and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.losses import LOSSES, loss_fn
from core.metrics import METRICS, metric_fns
from core.spec.job import (
    AccuracyMetric,
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    MAEMetric,
    MSELoss,
    SSELoss,
    TopKAccuracyMetric,
)


@pytest.fixture
def x64() -> Iterator[None]:
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


def _cases() -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "cross_entropy": (
            CrossEntropyLoss(type="cross_entropy", label_smoothing=0.1),
            rng.normal(size=(4, 3)),
            np.array([0, 2, 1, 2]),
        ),
        "binary_cross_entropy": (
            BinaryCrossEntropyLoss(type="binary_cross_entropy"),
            rng.normal(size=(4, 1)),
            np.array([0, 1, 1, 0]),
        ),
        "mse": (MSELoss(type="mse"), rng.normal(size=(4, 2)), rng.normal(size=(4, 2))),
        "sse": (SSELoss(type="sse"), rng.normal(size=(4, 2)), rng.normal(size=(4, 2))),
    }


def test_every_loss_has_a_gradient_check() -> None:
    assert set(_cases()) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradient_matches_finite_differences(name: str, x64: None) -> None:
    spec, outputs, targets = _cases()[name]
    weights = jnp.array([1.0, 1.0, 0.5, 0.0])
    f = loss_fn(spec)
    outputs = jnp.asarray(outputs, jnp.float64)

    def scalar(o: jax.Array) -> jax.Array:
        return f(o, jnp.asarray(targets), weights)

    analytic = np.asarray(jax.grad(scalar)(outputs))
    numeric = np.zeros_like(analytic)
    eps = 1e-6
    for index in np.ndindex(outputs.shape):
        bump = jnp.zeros_like(outputs).at[index].set(eps)
        numeric[index] = (scalar(outputs + bump) - scalar(outputs - bump)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    assert analytic[3].tolist() == [0.0] * outputs.shape[1]  # weight 0: padding never counts


def test_loss_values() -> None:
    out = jnp.array([[1.0, 2.0], [3.0, 5.0]])
    target = jnp.array([[0.0, 0.0], [3.0, 3.0]])
    w = jnp.ones(2)
    # sse: ½ · Σ over outputs and batch; mse: mean over outputs and batch.
    assert float(loss_fn(SSELoss(type="sse"))(out, target, w)) == pytest.approx(
        0.5 * (1 + 4 + 0 + 4)
    )
    assert float(loss_fn(MSELoss(type="mse"))(out, target, w)) == pytest.approx((1 + 4 + 0 + 4) / 4)
    logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = jnp.array([0, 2])
    ce = loss_fn(CrossEntropyLoss(type="cross_entropy"))
    by_index = float(ce(logits, labels, w))
    one_hot = float(ce(logits, jax.nn.one_hot(labels, 3), w))
    expected = float(-jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels]))
    assert by_index == pytest.approx(expected) and one_hot == pytest.approx(expected)
    bce = loss_fn(BinaryCrossEntropyLoss(type="binary_cross_entropy"))
    value = float(bce(jnp.array([[0.0], [2.0]]), jnp.array([1, 0]), w))
    assert value == pytest.approx((np.log(2) + np.log1p(np.exp(2.0))) / 2, rel=1e-6)


def test_every_metric_is_tested() -> None:
    assert set(METRICS) == {"accuracy", "top_k_accuracy", "mae"}


def test_accuracy_multiclass_binary_logits_and_sigmoid_outputs() -> None:
    ce = CrossEntropyLoss(type="cross_entropy")
    acc = metric_fns([AccuracyMetric(type="accuracy")], ce)["accuracy"]
    logits = jnp.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    assert acc(logits, jnp.array([0, 2])).tolist() == [1.0, 0.0]
    # A single logit output (binary_cross_entropy) is thresholded at 0 …
    bce = BinaryCrossEntropyLoss(type="binary_cross_entropy")
    binary = metric_fns([AccuracyMetric(type="accuracy")], bce)["accuracy"]
    assert binary(jnp.array([[0.3], [-0.2]]), jnp.array([1, 1])).tolist() == [1.0, 0.0]
    # … and a sigmoid output trained with mse/sse at 0.5.
    sigmoid = metric_fns([AccuracyMetric(type="accuracy")], SSELoss(type="sse"))["accuracy"]
    assert sigmoid(jnp.array([[0.3], [0.7]]), jnp.array([1, 1])).tolist() == [0.0, 1.0]


def test_top_k_accuracy_and_mae() -> None:
    ce = CrossEntropyLoss(type="cross_entropy")
    fns = metric_fns([TopKAccuracyMetric(type="top_k_accuracy", k=2), MAEMetric(type="mae")], ce)
    logits = jnp.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    assert fns["top_k_accuracy"](logits, jnp.array([1, 2])).tolist() == [1.0, 0.0]
    mae = fns["mae"](jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 4.0]]))
    assert mae.tolist() == [1.5]
