"""Parameter initialisers by spec, on top of `jax.nn.initializers`.

Kernels are laid out `[..., in, out]` (dense `[in, out]`, conv `[kh, kw, in, out]`), which
is the layout jax's variance-scaling initialisers assume for fan-in and fan-out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from core.spec.base import NamedInit, NormalInit, UniformInit

Init = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]

_NAMED: dict[str, Init] = {
    "glorot_uniform": jinit.glorot_uniform(),
    "glorot_normal": jinit.glorot_normal(),
    "he_normal": jinit.he_normal(),
    "he_uniform": jinit.he_uniform(),
    "lecun_normal": jinit.lecun_normal(),
    "zeros": jinit.zeros,
    "ones": jinit.ones,
}


def initializer(spec: NamedInit | UniformInit | NormalInit) -> Init:
    """The `init(key, shape, dtype)` function for an initialiser spec."""
    if isinstance(spec, UniformInit):
        low, high = spec.low, spec.high

        def uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
            return jax.random.uniform(key, shape, dtype, minval=low, maxval=high)

        return uniform
    if isinstance(spec, NormalInit):
        mean, stddev = spec.mean, spec.stddev

        def normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
            return mean + stddev * jax.random.normal(key, shape, dtype)

        return normal
    return _NAMED[spec.type]
