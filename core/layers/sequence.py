"""Token embeddings and recurrent layers over `[time, features]` examples.

Recurrent parameters follow Keras' names and layouts so exported models line up with
Keras weights: `kernel [D, G·units]`, `recurrent_kernel [units, G·units]` and `bias`, with
the G gate blocks side by side along the last axis (LSTM: i, f, c, o; GRU: z, r, h).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from core.activations import activation
from core.initializers import initializer
from core.layers.base import Layer, Params, Shape, ShapeMismatch, State, register
from core.spec.layers import GRU, LSTM, Embedding, Recurrent, SimpleRNN

R = TypeVar("R", bound=Recurrent)


def expect_sequence(in_shape: Shape) -> None:
    """Shared check for layers that read `[time, features]` examples (recurrent, attention)."""
    if len(in_shape) != 2:
        raise ShapeMismatch(
            "expects each example to be a sequence (time, features) (rank 2), got shape "
            f"{list(in_shape)}; add an embedding layer for token ids or a reshape layer "
            "for flat features"
        )
    if in_shape[0] == 0 or in_shape[1] == 0:
        raise ShapeMismatch(f"got an empty sequence of shape {list(in_shape)}")


@register("embedding")
class EmbeddingLayer(Layer[Embedding]):
    """Looks up a `dim`-vector per token id; param `embeddings [vocab_size, dim]`.

    Inputs are `[T]` (or `[]`) per example and hold integer ids as floats, since datasets
    are float32; they are rounded to the nearest integer. Output `[T, dim]` (or `[dim]`).
    An id outside `[0, vocab_size)` (or NaN) maps to a zero vector and passes no gradient
    to any row: clipping it to a valid id instead would silently train another token's
    vector.
    """

    def check(self, in_shapes: Sequence[Shape]) -> None:
        if len(in_shapes[0]) > 1:
            raise ShapeMismatch(
                "expects each example to be a sequence of token ids (time,) (rank 1) or one "
                f"id (rank 0), got shape {list(in_shapes[0])}; add a flatten or reshape layer"
            )

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        shape = (self.spec.vocab_size, self.spec.dim)
        return {"embeddings": initializer(self.spec.embeddings_init)(key, shape, jnp.float32)}, {}

    def apply(
        self,
        params: Params,
        state: State,
        inputs: Sequence[jax.Array],
        *,
        train: bool,
        key: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        table = params["embeddings"]
        ids = jnp.round(inputs[0])
        # Range-check before the integer cast, which would wrap huge values into range;
        # NaN fails both comparisons and so counts as out of range too.
        valid = (ids >= 0) & (ids < table.shape[0])
        rows = jnp.take(table, jnp.where(valid, ids, 0).astype(jnp.int32), axis=0)
        return jnp.where(valid[..., None], rows, 0.0), state


class _RecurrentLayer(Layer[R]):
    """Shared scan over time: input `[T, D]` → `[units]` (last step) or `[T, units]`.

    Subclasses set `gates` (G) and implement `_step(params, x_proj, h, c)`, where `x_proj`
    `[B, G·units]` is the step's input already projected (`x·kernel + input bias`): that is
    done for all steps in one matmul outside the sequential scan, as it needs no state.
    `c` is the LSTM cell state; the other cells carry it through unchanged.
    """

    gates: int = 1

    def check(self, in_shapes: Sequence[Shape]) -> None:
        expect_sequence(in_shapes[0])

    def init(self, key: jax.Array, in_shapes: Sequence[Shape]) -> tuple[Params, State]:
        k_kernel, k_recurrent = jax.random.split(key)
        units, width = self.spec.units, self.gates * self.spec.units
        params = {
            "kernel": jinit.glorot_uniform()(k_kernel, (in_shapes[0][-1], width), jnp.float32),
            "recurrent_kernel": jinit.orthogonal()(k_recurrent, (units, width), jnp.float32),
            "bias": self._bias(),
        }
        return params, {}

    def _bias(self) -> jax.Array:
        return jnp.zeros((self.gates * self.spec.units,), jnp.float32)

    def _input_projection(self, params: Params, x: jax.Array) -> jax.Array:
        return x @ params["kernel"] + params["bias"]

    def _step(
        self, params: Params, x_proj: jax.Array, h: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One time step on `[B, G·units]` projections; returns the new (h, c)."""
        raise NotImplementedError

    def apply(
        self,
        params: Params,
        state: State,
        inputs: Sequence[jax.Array],
        *,
        train: bool,
        key: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        x = inputs[0]
        # Time-major so lax.scan walks the leading axis: [T, B, G·units].
        x_proj = jnp.swapaxes(self._input_projection(params, x), 0, 1)
        zeros = jnp.zeros((x.shape[0], self.spec.units), x_proj.dtype)

        def step(
            carry: tuple[jax.Array, jax.Array], xt: jax.Array
        ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
            h, c = self._step(params, xt, *carry)
            return (h, c), h

        (h_last, _), hs = jax.lax.scan(step, (zeros, zeros), x_proj)
        if self.spec.return_sequences:
            return jnp.swapaxes(hs, 0, 1), state
        return h_last, state


@register("rnn")
class SimpleRNNLayer(_RecurrentLayer[SimpleRNN]):
    """Elman RNN: `h_t = act(x_t·kernel + h_{t-1}·recurrent_kernel + bias)`, act tanh by default.

    Params: `kernel [D, units]`, `recurrent_kernel [units, units]`, `bias [units]`.
    """

    def _step(
        self, params: Params, x_proj: jax.Array, h: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        h = activation(self.spec.activation)(x_proj + h @ params["recurrent_kernel"])
        return h, c


@register("lstm")
class LSTMLayer(_RecurrentLayer[LSTM]):
    """Long short-term memory, Keras layout with gate blocks i, f, c, o.

    Params: `kernel [D, 4·units]`, `recurrent_kernel [units, 4·units]`, `bias [4·units]`;
    the forget-gate bias starts at 1 (Keras' `unit_forget_bias`) so the cell remembers by
    default early in training.
    """

    gates = 4

    def _bias(self) -> jax.Array:
        u = self.spec.units
        return jnp.zeros((4 * u,), jnp.float32).at[u : 2 * u].set(1.0)

    def _step(
        self, params: Params, x_proj: jax.Array, h: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        z = x_proj + h @ params["recurrent_kernel"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c


@register("gru")
class GRULayer(_RecurrentLayer[GRU]):
    """Gated recurrent unit with Keras' `reset_after=True` convention (gate blocks z, r, h).

    Params: `kernel [D, 3·units]`, `recurrent_kernel [units, 3·units]`, `bias [2, 3·units]`
    (row 0 is added to the input projection, row 1 to the recurrent one). The reset gate
    multiplies the recurrent projection after the matmul:
    `h̃ = tanh(x·W_h + b_h + r ⊙ (h·U_h + b'_h))`, and `h_t = z ⊙ h_{t-1} + (1 − z) ⊙ h̃`.
    """

    gates = 3

    def _bias(self) -> jax.Array:
        return jnp.zeros((2, 3 * self.spec.units), jnp.float32)

    def _input_projection(self, params: Params, x: jax.Array) -> jax.Array:
        return x @ params["kernel"] + params["bias"][0]

    def _step(
        self, params: Params, x_proj: jax.Array, h: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        x_z, x_r, x_h = jnp.split(x_proj, 3, axis=-1)
        h_z, h_r, h_h = jnp.split(h @ params["recurrent_kernel"] + params["bias"][1], 3, axis=-1)
        z = jax.nn.sigmoid(x_z + h_z)
        r = jax.nn.sigmoid(x_r + h_r)
        candidate = jnp.tanh(x_h + r * h_h)
        return z * h + (1.0 - z) * candidate, c
