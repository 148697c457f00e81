"""The next trial's values, from Optuna's samplers asked with fixed distributions.

No Optuna storage: for each new trial a throw-away in-memory study is rebuilt from the
trial rows (their encoded values, state, metric value and the sampler's notes about them),
then asked once. So the search survives any restart, and two controllers that rebuild
the same history get the same answer.

Encoding: a categorical parameter is sampled as the index of its value (so objects and
lists can be values); `normal` as its quantile in (0, 1), turned into a value by the
inverse CDF, since Optuna has no normal distribution.

Seeds: `random` and `tpe` seed their sampler from (sweep seed, trial number), so a trial's
draw does not depend on when it was asked; `grid` shuffles its points by the sweep's seed
and takes the first one no trial has taken yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from app.domain.sweeps.definition import (
    IntUniform,
    LogUniform,
    Normal,
    Parameter,
    SweepDefinition,
    Uniform,
    Values,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

QUANTILE_EDGE = 1e-6  # a normal's quantile stays in [edge, 1 - edge]: no infinite draws


class TrialOutcome(StrEnum):
    """A trial as the sampler sees it."""

    ACTIVE = "active"  # queued or running: its values are taken, its result unknown
    COMPLETE = "complete"  # finished with a metric value
    PRUNED = "pruned"  # stopped early; `value` is its last recorded one, if any
    FAILED = "failed"  # failed or cancelled, or finished without a usable value


@dataclass(frozen=True)
class TrialRecord:
    encoded: dict[str, Any]  # the sampler's values, by parameter path
    notes: dict[str, Any]  # the sampler's system attributes for this trial
    outcome: TrialOutcome
    value: float | None = None
    epoch: int | None = None  # the epoch of a pruned trial's value


@dataclass(frozen=True)
class Suggestion:
    params: dict[str, Any]  # the values to put into the spec, by parameter path
    encoded: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def sampler_state(self) -> dict[str, Any]:
        """What a trial row keeps for rebuilding the study (`jobs.trial_sampler`)."""
        return {"encoded": self.encoded, "notes": self.notes}


def suggest(definition: SweepDefinition, history: Sequence[TrialRecord], number: int) -> Suggestion:
    """The values of trial `number`, given every trial made before it."""
    distributions = {path: _distribution(p) for path, p in definition.parameters.items()}
    study = optuna.create_study(
        direction=definition.metric.goal, sampler=_sampler(definition, number)
    )
    for record in history:
        study.add_trial(_frozen(record, distributions))
    trial = study.ask(fixed_distributions=distributions)
    notes = study.get_trials(deepcopy=False)[-1].system_attrs
    params = {
        path: _decode(definition.parameters[path], value) for path, value in trial.params.items()
    }
    return Suggestion(params=params, encoded=dict(trial.params), notes=_json_safe(notes))


def trial_seed(seed: int, number: int) -> int:
    """A sampler seed for one trial, mixed from the sweep's seed and the trial number."""
    state = np.random.SeedSequence([abs(seed), number, 1 if seed < 0 else 0]).generate_state(1)
    return int(state[0])


def _sampler(definition: SweepDefinition, number: int) -> optuna.samplers.BaseSampler:
    if definition.method == "grid":
        space = {
            path: list(range(len(p.values)))
            for path, p in definition.parameters.items()
            if isinstance(p, Values)
        }
        return optuna.samplers.GridSampler(space, seed=trial_seed(definition.seed, 0))
    seed = trial_seed(definition.seed, number)
    if definition.method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _distribution(parameter: Parameter) -> BaseDistribution:
    if isinstance(parameter, Values):
        return CategoricalDistribution(list(range(len(parameter.values))))
    if isinstance(parameter, Uniform):
        return FloatDistribution(parameter.min, parameter.max)
    if isinstance(parameter, LogUniform):
        return FloatDistribution(parameter.min, parameter.max, log=True)
    if isinstance(parameter, IntUniform):
        return IntDistribution(parameter.min, parameter.max)
    return FloatDistribution(QUANTILE_EDGE, 1 - QUANTILE_EDGE)  # Normal: its quantile


def _decode(parameter: Parameter, value: Any) -> Any:
    if isinstance(parameter, Values):
        return parameter.values[int(value)]
    if isinstance(parameter, Normal):
        return NormalDist(parameter.mean, parameter.std).inv_cdf(float(value))
    if isinstance(parameter, IntUniform):
        return int(value)
    return float(value)


_STATES = {
    TrialOutcome.ACTIVE: TrialState.RUNNING,
    TrialOutcome.COMPLETE: TrialState.COMPLETE,
    TrialOutcome.PRUNED: TrialState.PRUNED,
    TrialOutcome.FAILED: TrialState.FAIL,
}


def _frozen(
    record: TrialRecord, distributions: dict[str, BaseDistribution]
) -> optuna.trial.FrozenTrial:
    usable = record.value is not None and math.isfinite(record.value)
    outcome = record.outcome
    if outcome == TrialOutcome.COMPLETE and not usable:
        outcome = TrialOutcome.FAILED
    intermediate: dict[int, float] = {}
    if outcome == TrialOutcome.PRUNED and record.value is not None and usable:
        intermediate = {record.epoch or 0: record.value}
    return create_trial(
        state=_STATES[outcome],
        value=record.value if outcome == TrialOutcome.COMPLETE else None,
        params=record.encoded,
        distributions={path: distributions[path] for path in record.encoded},
        system_attrs=record.notes,
        intermediate_values=intermediate,
    )


def _json_safe(notes: dict[str, Any]) -> dict[str, Any]:
    """The sampler's notes as plain JSON (the grid's are ints and lists of ints)."""
    return {
        key: value
        for key, value in notes.items()
        if isinstance(value, str | int | float | bool | list | dict | type(None))
    }
