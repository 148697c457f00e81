"""The layer protocol and the registry that maps spec `type` names to implementations.

A layer is a small immutable object built from its spec. Shapes here are per example
(no batch dimension); arrays passed to `apply` carry a leading batch dimension.

Adding a layer type = a spec model in core/spec/layers.py, a class here decorated with
`@register("type")`, and a gradient-check case in tests/core/test_layers_gradcheck.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import jax

Shape = tuple[int, ...]
Params = dict[str, Any]  # {"kernel": Array, ...}; nested dicts for composite layers
State = dict[str, Any]  # non-trained variables (batch-norm running statistics)

SpecT = TypeVar("SpecT")


class ShapeMismatch(ValueError):
    """Raised by `Layer.check` with a message saying what was expected and what was found."""


class Layer(Generic[SpecT]):
    """Base class of every layer; subclasses override `init` and `apply` (and `check`).

    Attributes:
      spec: the validated layer spec.
      uses_rng: whether `apply` needs a PRNG key when training (dropout).
    """

    uses_rng: bool = False

    def __init__(self, spec: SpecT):
        self.spec = spec

    @property
    def name(self) -> str:
        return str(self.spec.name)  # type: ignore[attr-defined]

    def check(self, in_shapes: Sequence[Shape]) -> None:
        """Raise `ShapeMismatch` when the per-example input shapes cannot work."""

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        """Create parameters and state for inputs of the given per-example shapes."""
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        inputs: Sequence[jax.Array],
        *,
        train: bool,
        key: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        """Compute the output for a batch; returns (output, new state)."""
        raise NotImplementedError


LAYERS: dict[str, type[Layer[Any]]] = {}

L = TypeVar("L", bound=type[Layer[Any]])


def register(type_name: str) -> Callable[[L], L]:
    """Class decorator: make `type_name` in a spec build this layer class."""

    def add(cls: L) -> L:
        if type_name in LAYERS:
            raise ValueError(f"layer type {type_name!r} registered twice")
        LAYERS[type_name] = cls
        return cls

    return add


def build_layer(spec: Any) -> Layer[Any]:
    """The layer object for a validated layer spec."""
    return LAYERS[spec.type](spec)


def expect_rank(in_shape: Shape, rank: int, what: str) -> None:
    """Raise unless examples have `rank` axes; `what` names the layout, e.g. "(height, width)"."""
    if len(in_shape) != rank:
        raise ShapeMismatch(
            f"expects each example to be {what} (rank {rank}), got shape {list(in_shape)}"
        )
