"""Sweep rules without a server: parameter paths, the definition's checks, ASHA and the
median rule on hand-made rung data, and the samplers (grid exact, random and TPE
reproducible by seed)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain.sweeps.definition import (
    Asha,
    MedianStop,
    Metric,
    SweepDefinition,
    parse_path,
    value_at,
    with_values,
)
from app.domain.sweeps.pruning import asha_continues, decision_epochs, median_continues
from app.domain.sweeps.sampling import TrialOutcome, TrialRecord, suggest
from tests.specs import xor_mlp

MAXIMIZE = Metric(name="val_accuracy", goal="maximize")
MINIMIZE = Metric(name="val_loss", goal="minimize")


def definition(**fields: Any) -> SweepDefinition:
    body: dict[str, Any] = {
        "spec": xor_mlp(),
        "parameters": {
            "optimizer.learning_rate": {"distribution": "log_uniform", "min": 1e-4, "max": 0.1},
            "model.layers[0].units": {"values": [4, 8, 16]},
        },
        "metric": {"name": "accuracy"},
        "max_trials": 10,
        **fields,
    }
    return SweepDefinition.model_validate(body)


# -- paths ------------------------------------------------------------------------------


def test_paths_parse_into_keys_and_indices() -> None:
    assert parse_path("model.layers[3].units") == ("model", "layers", 3, "units")
    assert parse_path("a[0][2].b") == ("a", 0, 2, "b")
    for bad in ["", "model..units", "model.layers[x]", "model.layers[-1]", "1abc"]:
        with pytest.raises(ValueError, match="not a path"):
            parse_path(bad)


def test_a_missing_path_is_named_where_it_breaks() -> None:
    spec = {"model": {"layers": [{"units": 4}]}}
    with pytest.raises(KeyError, match=r"model.layers has 1 items, so \[3\] does not exist"):
        value_at(spec, parse_path("model.layers[3].units"))
    with pytest.raises(KeyError, match="model has no 'layer'"):
        value_at(spec, parse_path("model.layer"))


def test_with_values_copies_and_sets() -> None:
    spec = {"model": {"layers": [{"units": 4}]}}
    changed = with_values(spec, {("model", "layers", 0, "units"): {"nested": [1]}})
    assert changed == {"model": {"layers": [{"units": {"nested": [1]}}]}}
    assert spec == {"model": {"layers": [{"units": 4}]}}


# -- the definition's own checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "grid"}, "a grid sweep takes only"),
        ({"max_trials": None}, "max_trials is required"),
        (
            {"parameters": {"x": {"distribution": "uniform", "min": 1, "max": 1}}},
            "min \\(1.0\\) must be below max",
        ),
        ({"parameters": {"x": {"distribution": "beta"}}}, "a parameter is"),
        ({"early_termination": {"type": "asha", "reduction_factor": 1}}, "greater than or equal"),
    ],
)
def test_definition_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        definition(**fields)


def test_a_grid_gets_its_size_as_max_trials_and_no_more() -> None:
    grid = {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}}
    assert definition(method="grid", parameters=grid, max_trials=None).max_trials == 6
    with pytest.raises(ValidationError, match="the grid has 6 points"):
        definition(method="grid", parameters=grid, max_trials=7)


# -- early termination -------------------------------------------------------------------


def test_asha_rungs_and_its_promotion_rule() -> None:
    rule = Asha(type="asha", min_epochs=1, reduction_factor=3)
    assert decision_epochs(rule, 20) == [1, 3, 9]  # never the last epoch
    assert decision_epochs(Asha(type="asha", min_epochs=2, reduction_factor=2), 16) == [2, 4, 8]
    # the first trial at a rung always goes on, and so does a tie
    assert asha_continues(rule, MAXIMIZE, 0.1, [0.1])
    assert asha_continues(rule, MAXIMIZE, 0.5, [0.5, 0.5])
    # 3 at the rung: only the top ceil(3/3) = 1 goes on
    assert asha_continues(rule, MAXIMIZE, 0.9, [0.5, 0.7, 0.9])
    assert not asha_continues(rule, MAXIMIZE, 0.7, [0.5, 0.7, 0.9])
    # 4 at the rung: the top ceil(4/3) = 2 go on
    assert asha_continues(rule, MAXIMIZE, 0.7, [0.5, 0.7, 0.9, 0.6])
    assert not asha_continues(rule, MAXIMIZE, 0.6, [0.5, 0.7, 0.9, 0.6])
    # minimize: lower is better
    assert asha_continues(rule, MINIMIZE, 0.1, [0.1, 0.4, 0.3])
    assert not asha_continues(rule, MINIMIZE, 0.3, [0.1, 0.4, 0.3])
    # a non-finite value never goes on
    assert not asha_continues(rule, MINIMIZE, float("nan"), [float("nan")])


def test_the_median_rule() -> None:
    rule = MedianStop(type="median", min_epochs=2)
    assert decision_epochs(rule, 5) == [2, 3, 4]
    assert median_continues(MAXIMIZE, 0.2, [])  # nothing earlier to compare with
    assert median_continues(MAXIMIZE, 0.6, [0.5, 0.6, 0.9])  # at the median
    assert not median_continues(MAXIMIZE, 0.55, [0.5, 0.6, 0.9])
    assert median_continues(MINIMIZE, 0.55, [0.5, 0.6, 0.9])


# -- samplers ----------------------------------------------------------------------------


def _run(sweep: SweepDefinition, trials: int, value: Any = None) -> list[dict[str, Any]]:
    """Ask for `trials` trials one after another, each finished before the next."""
    history: list[TrialRecord] = []
    params = []
    for number in range(trials):
        suggestion = suggest(sweep, history, number)
        params.append(suggestion.params)
        score = value(suggestion.params) if value else 0.5
        history.append(
            TrialRecord(suggestion.encoded, suggestion.notes, TrialOutcome.COMPLETE, score)
        )
    return params


def test_grid_enumerates_every_point_exactly_once() -> None:
    grid = {"a": {"values": [1, 2, 3]}, "b": {"values": [{"x": 1}, [2], None]}}
    sweep = definition(method="grid", parameters=grid, max_trials=None)
    points = _run(sweep, 9)
    expected = [{"a": a, "b": b} for a, b in itertools.product([1, 2, 3], [{"x": 1}, [2], None])]
    assert sorted(map(repr, points)) == sorted(map(repr, expected))


def test_grid_counts_active_trials_as_taken() -> None:
    grid = {"a": {"values": [1, 2, 3, 4]}}
    sweep = definition(method="grid", parameters=grid, max_trials=None)
    history: list[TrialRecord] = []
    seen = []
    for number in range(4):  # all four asked while none has finished
        suggestion = suggest(sweep, history, number)
        seen.append(suggestion.params["a"])
        history.append(TrialRecord(suggestion.encoded, suggestion.notes, TrialOutcome.ACTIVE))
    assert sorted(seen) == [1, 2, 3, 4]


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_random_and_tpe_are_reproducible_by_seed(method: str) -> None:
    def score(params: dict[str, Any]) -> float:
        return -abs(params["optimizer.learning_rate"] - 0.01)

    first = _run(definition(method=method, seed=7), 12, score)
    again = _run(definition(method=method, seed=7), 12, score)
    other = _run(definition(method=method, seed=8), 12, score)
    assert first == again
    assert first != other
    for params in first:
        assert 1e-4 <= params["optimizer.learning_rate"] <= 0.1
        assert params["model.layers[0].units"] in (4, 8, 16)


def test_int_uniform_and_normal_draws() -> None:
    sweep = definition(
        parameters={
            "training.epochs": {"distribution": "int_uniform", "min": 2, "max": 5},
            "training.seed": {"distribution": "normal", "mean": 100.0, "std": 1.0},
        }
    )
    params = _run(sweep, 30)
    epochs = [p["training.epochs"] for p in params]
    assert all(isinstance(e, int) and 2 <= e <= 5 for e in epochs)
    assert set(epochs) == {2, 3, 4, 5}
    seeds = [p["training.seed"] for p in params]
    assert min(seeds) > 95 and max(seeds) < 105 and 99 < sum(seeds) / len(seeds) < 101
