"""Activation functions by spec name."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "softmax": jax.nn.softmax,
    "linear": lambda x: x,
}


def activation(name: str | None) -> Callable[[jax.Array], jax.Array]:
    """The function for `name`; `None` means no activation (identity)."""
    return ACTIVATIONS[name or "linear"]
