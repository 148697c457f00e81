"""A sweep's definition (API.md, "Sweeps"): the search space, method, metric and budget.

Parameters are addressed by paths into the JobSpec (`model.layers[3].units`,
`optimizer.learning_rate`), resolved against the spec with its defaults filled in, so a
path to a defaulted field exists too. A parameter is categorical (`values`: any JSON
values, whole objects included) or a distribution: `uniform` and `log_uniform` (`min`,
`max`), `int_uniform` (integers `min`..`max` inclusive) or `normal` (`mean`, `std`).
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from core.spec.base import PositiveInt, StrictModel, printable

MAX_TRIALS = 10_000
MAX_CONCURRENT = 100
# Each categorical value is checked as a spec at submission: this bounds that work.
MAX_VALUES = 1_000

Path = tuple[str | int, ...]

_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class _Range(StrictModel):
    """A distribution over [min, max]; the subclasses give the bounds their types."""

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Uniform(_Range):
    distribution: Literal["uniform"]


class LogUniform(_Range):
    distribution: Literal["log_uniform"]
    min: Annotated[float, Field(gt=0)]
    max: Annotated[float, Field(gt=0)]


class IntUniform(_Range):
    distribution: Literal["int_uniform"]
    min: int
    max: int


class Normal(StrictModel):
    distribution: Literal["normal"]
    mean: float
    std: Annotated[float, Field(gt=0)]


class Values(StrictModel):
    """A categorical parameter: one of these JSON values (objects and lists allowed)."""

    values: Annotated[list[Any], Field(min_length=1, max_length=MAX_VALUES)]


def _parameter_kind(value: Any) -> str:
    """The tag of a parameter: from a body's dict, or (when serialising) from the model."""
    if isinstance(value, dict):
        return str(value.get("distribution", "values"))
    return str(getattr(value, "distribution", "values"))


Parameter = Annotated[
    Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("log_uniform")]
    | Annotated[IntUniform, Tag("int_uniform")]
    | Annotated[Normal, Tag("normal")]
    | Annotated[Values, Tag("values")],
    Discriminator(
        _parameter_kind,
        custom_error_type="invalid_parameter",
        custom_error_message="a parameter is {'values': [...]} or {'distribution': "
        "'uniform' | 'log_uniform' | 'int_uniform' | 'normal', ...}",
    ),
]


class Metric(StrictModel):
    name: str
    goal: Literal["maximize", "minimize"] = "maximize"

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return a > b if self.goal == "maximize" else a < b


class Asha(StrictModel):
    """Asynchronous successive halving: at each rung (epoch min_epochs·rfᵏ) a trial goes
    on only if it is in the top 1/rf of the trials that reached that rung so far."""

    type: Literal["asha"]
    min_epochs: PositiveInt = 1
    reduction_factor: Annotated[int, Field(ge=2, le=100)] = 3


class MedianStop(StrictModel):
    """From `min_epochs` on, a trial worse than the median of the earlier trials' values at
    the same epoch is stopped."""

    type: Literal["median"]
    min_epochs: PositiveInt = 1


EarlyTermination = Annotated[Asha | MedianStop, Field(discriminator="type")]


class SweepDefinition(StrictModel):
    """The validated sweep body; `spec` is the base JobSpec (defaults filled in once the
    service has checked it)."""

    name: Annotated[str, Field(min_length=1, max_length=180), AfterValidator(printable)] | None = (
        None
    )
    spec: dict[str, Any]
    parameters: Annotated[dict[str, Parameter], Field(min_length=1, max_length=64)]
    method: Literal["grid", "random", "tpe"] = "random"
    metric: Metric
    max_trials: Annotated[int | None, Field(gt=0, le=MAX_TRIALS)] = None
    max_concurrent: Annotated[int, Field(gt=0, le=MAX_CONCURRENT)] = 2
    early_termination: EarlyTermination | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _budget(self) -> SweepDefinition:
        values = sum(len(p.values) for p in self.parameters.values() if isinstance(p, Values))
        if values > MAX_VALUES:
            raise ValueError(
                f"the parameters list {values} categorical values in all; at most "
                f"{MAX_VALUES} (use a distribution for a numeric range)"
            )
        if self.method == "grid":
            continuous = [p for p, v in self.parameters.items() if not isinstance(v, Values)]
            if continuous:
                raise ValueError(
                    f"a grid sweep takes only {{'values': [...]}} parameters; "
                    f"{', '.join(continuous)} has a distribution (use method 'random' or 'tpe')"
                )
            points = self.grid_size()
            if points > MAX_TRIALS:
                raise ValueError(
                    f"the grid has {points} points; at most {MAX_TRIALS} (fewer values, or "
                    "method 'random' over the same values)"
                )
            if self.max_trials is None:
                self.max_trials = points
            elif self.max_trials > points:
                raise ValueError(
                    f"max_trials is {self.max_trials} but the grid has {points} points; "
                    f"give at most {points} (or leave max_trials out)"
                )
        elif self.max_trials is None:
            raise ValueError("max_trials is required for a random or tpe sweep")
        return self

    def grid_size(self) -> int:
        size = 1
        for parameter in self.parameters.values():
            size *= len(parameter.values) if isinstance(parameter, Values) else 0
        return size

    @property
    def trials_budget(self) -> int:
        assert self.max_trials is not None  # set for grid, required otherwise
        return self.max_trials


def parse_path(text: str) -> Path:
    """`model.layers[3].units` → ("model", "layers", 3, "units"); ValueError if malformed."""
    parts: list[str | int] = []
    for piece in text.split("."):
        match = _PATH_PART.fullmatch(piece)
        if match is None:
            raise ValueError(
                f"{text!r} is not a path into the spec: write keys joined by dots with "
                "[i] for list items, e.g. 'model.layers[3].units'"
            )
        parts.append(match.group(1))
        parts.extend(int(index) for index in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(parts)


def value_at(document: Any, path: Path) -> Any:
    """The value at `path`; KeyError naming the first part that does not exist."""
    node = document
    for depth, part in enumerate(path):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = f"has {len(node)} items" if isinstance(node, list) else "is not a list"
                raise KeyError(f"{_show(path[:depth])} {size}, so [{part}] does not exist")
        elif not isinstance(node, dict) or part not in node:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else "not an object"
            raise KeyError(f"{_show(path[:depth]) or 'the spec'} has no {part!r} (it has: {have})")
        node = node[part]
    return node


def with_values(document: dict[str, Any], values: dict[Path, Any]) -> dict[str, Any]:
    """A deep copy of `document` with each path set to its value (the paths must exist)."""
    result = copy.deepcopy(document)
    for path, value in values.items():
        value_at(result, path)  # raises for a path that does not exist
        parent = value_at(result, path[:-1])
        parent[path[-1]] = copy.deepcopy(value)
    return result


def _show(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def extremes(parameter: Parameter) -> list[Any]:
    """The values a submit check tries for a parameter: each categorical value, a range's
    ends, a normal's mean and mean ± 3 std (a draw beyond those makes a trial that fails
    with `invalid_spec` if its spec is invalid)."""
    if isinstance(parameter, Values):
        return list(parameter.values)
    if isinstance(parameter, Normal):
        spread = 3 * parameter.std
        return [parameter.mean - spread, parameter.mean, parameter.mean + spread]
    return [parameter.min, parameter.max]
