"""Shared building blocks of the JobSpec models."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo like `learning_rte` must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def printable(name: str) -> str:
    """A name shown in lists, logs and file names: no control characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a name cannot hold control characters (NUL, tab, newline…)")
    return name


def as_typed_object(value: Any, scalar_key: str | None = None) -> Any:
    """Normalise the shorthand forms of a tagged object to `{"type": …}`.

    `"mse"` becomes `{"type": "mse"}`; with `scalar_key`, a bare number becomes
    `{"type": "constant", scalar_key: number}` (a constant learning rate). The validated spec
    shows the normalised form, so every union in it is discriminated by `type` alone.
    """
    if isinstance(value, str):
        return {"type": value}
    if scalar_key is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return {"type": "constant", scalar_key: value}
    return value


def shorthand(*models: type[BaseModel], scalar_key: str | None = None) -> BeforeValidator:
    """The validator that accepts a bare `type` name (or number) for a tagged object.

    The JSON schema then documents the shorthand too, so API.md's own examples
    (`"loss": "cross_entropy"`, `"learning_rate": 0.001`) match the published schema.
    """
    names = tuple(m.model_fields["type"].annotation.__args__[0] for m in models)  # type: ignore[union-attr]
    accepted: Any = Union[Literal[names], Union[models]]  # noqa: UP007  (built at run time)
    if scalar_key is not None:
        accepted = Union[float, accepted]  # noqa: UP007
    return BeforeValidator(
        partial(as_typed_object, scalar_key=scalar_key), json_schema_input_type=accepted
    )


Activation = Literal[
    "relu", "sigmoid", "tanh", "gelu", "silu", "elu", "leaky_relu", "softmax", "linear"
]


class NamedInit(StrictModel):
    type: Literal[
        "glorot_uniform",
        "glorot_normal",
        "he_normal",
        "he_uniform",
        "lecun_normal",
        "zeros",
        "ones",
    ]


class UniformInit(StrictModel):
    type: Literal["uniform"]
    low: float = -0.05
    high: float = 0.05


class NormalInit(StrictModel):
    type: Literal["normal"]
    mean: float = 0.0
    stddev: float = Field(0.05, gt=0)


Initializer = Annotated[
    NamedInit | UniformInit | NormalInit,
    Field(discriminator="type"),
    shorthand(NamedInit, UniformInit, NormalInit),
]

PositiveInt = Annotated[int, Field(gt=0)]
