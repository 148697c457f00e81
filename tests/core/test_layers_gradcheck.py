"""Gradient checks for every registered layer type against central finite differences.

Each case builds a layer from its spec on tiny shapes, takes f = Σ output · w for fixed
random w, and compares `jax.grad` of f with respect to the inputs and every parameter with
central differences, all in float64. A new layer type without a case here fails
`test_every_layer_type_has_a_gradient_check`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from core.activations import ACTIVATIONS
from core.layers import LAYERS, Layer, build_layer
from core.layers.base import Params, Shape, State
from core.spec.layers import (
    GRU,
    LSTM,
    ActivationLayer,
    Add,
    Attention,
    AvgPool2D,
    BatchNorm,
    Concat,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    Reshape,
    SimpleRNN,
    Slice,
    TransformerBlock,
)

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8


@dataclass(frozen=True)
class Case:
    label: str
    spec: Any
    in_shapes: tuple[Shape, ...]
    train: bool = False
    batch: int = 2
    # Inputs drawn as a shuffled grid (spacing 0.1 ≫ EPS) so max pooling has no ties.
    distinct: bool = False
    # Inputs are token ids: fixed, not differentiated.
    token_ids: np.ndarray | None = None
    # Replaces the initial state (batch-norm running statistics for eval mode).
    make_state: Callable[[np.random.Generator, State], State] | None = None


def _running_stats(rng: np.random.Generator, state: State) -> State:
    c = state["mean"].shape[0]
    return {"mean": rng.standard_normal(c), "var": rng.uniform(0.5, 2.0, c)}


def _pool_cases(spec: type[MaxPool2D] | type[AvgPool2D], type_name: str) -> list[Case]:
    def case(label: str, shape: Shape, **keys: Any) -> Case:
        layer_spec = spec.model_validate({"type": type_name, "name": "p", **keys})
        return Case(label, layer_spec, (shape,), distinct=type_name == "max_pool2d")

    return [
        case("2x2_valid", (5, 5, 2)),  # non-overlapping; the last row and column go unread
        case("2x2_same", (5, 5, 1), padding="same"),
        case("3x3_stride2_same", (5, 5, 2), pool_size=3, strides=2, padding="same"),
        case("2x1_stride3_gapped", (5, 5, 1), pool_size=[2, 1], strides=[3, 2]),
    ]


IMAGE = (4, 4, 2)
SEQ = (3, 2)  # [time, features]
TOKENS = np.array([[0, 3, 3, 4], [1, 5, -1, 2]], np.float64)  # repeats and out-of-range ids

CASES = [
    Case("tanh", Dense(type="dense", name="d", units=3, activation="tanh"), ((4,),)),
    Case("sequence_no_bias", Dense(type="dense", name="d", units=3, use_bias=False), ((2, 4),)),
    # core.ops picks a code path by size on CPU; these three conv cases reach every branch
    # of its conv2d forward pass and of both gradients.
    Case("same", Conv2D(type="conv2d", name="c", filters=3, kernel_size=[3, 3]), (IMAGE,)),
    Case(
        "valid_one_filter",
        Conv2D(type="conv2d", name="c", filters=1, kernel_size=[3, 3], padding="valid"),
        ((3, 3, 2),),
    ),
    Case(
        "same_strided_small",
        Conv2D(type="conv2d", name="c", filters=2, kernel_size=[2, 3], strides=[2, 2]),
        ((5, 5, 1),),
    ),
    *_pool_cases(MaxPool2D, "max_pool2d"),
    *_pool_cases(AvgPool2D, "avg_pool2d"),
    Case("", GlobalAvgPool2D(type="global_avg_pool2d", name="g"), ((3, 3, 2),)),
    Case("", Flatten(type="flatten", name="f"), ((2, 2, 2),)),
    Case("", Reshape(type="reshape", name="r", shape=[2, -1]), ((6,),)),
    Case("train", Dropout(type="dropout", name="do", rate=0.5), ((6,),), train=True),
    Case("eval", Dropout(type="dropout", name="do", rate=0.5), ((6,),)),
    Case("train", BatchNorm(type="batch_norm", name="bn"), ((2, 3),), train=True, batch=3),
    Case("eval", BatchNorm(type="batch_norm", name="bn"), ((3,),), make_state=_running_stats),
    Case("", LayerNorm(type="layer_norm", name="ln"), ((2, 4),)),
    *(
        Case(fn, ActivationLayer.model_validate({"type": "activation", "fn": fn}), ((2, 4),))
        for fn in sorted(ACTIVATIONS)
    ),
    Case("last_axis", Concat(type="concat", name="cat"), ((2, 3), (2, 1))),
    Case("axis0", Concat(type="concat", name="cat", axis=0), ((2, 3), (1, 3))),
    Case("", Add(type="add", name="add"), ((2, 3), (2, 3), (2, 3))),
    Case("", Slice(type="slice", name="s", start=1, stop=-1), ((5,),)),
    Case(
        "",
        Embedding(type="embedding", name="e", vocab_size=5, dim=3),
        ((4,),),
        token_ids=TOKENS,
    ),
    Case("last", SimpleRNN(type="rnn", name="r", units=3), (SEQ,)),
    Case(
        "sequences_relu",
        SimpleRNN(type="rnn", name="r", units=3, activation="relu", return_sequences=True),
        (SEQ,),
    ),
    Case("last", LSTM(type="lstm", name="l", units=3), (SEQ,)),
    Case("sequences", LSTM(type="lstm", name="l", units=3, return_sequences=True), (SEQ,)),
    Case("last", GRU(type="gru", name="g", units=3), (SEQ,)),
    Case("sequences", GRU(type="gru", name="g", units=3, return_sequences=True), (SEQ,)),
    Case("", Attention(type="attention", name="at", num_heads=2, head_dim=2), ((3, 4),)),
    Case(
        "causal",
        Attention(type="attention", name="at", num_heads=2, head_dim=3, causal=True),
        ((3, 4),),
    ),
    Case(
        "", TransformerBlock(type="transformer_block", name="t", num_heads=2, ff_dim=6), ((3, 4),)
    ),
    Case(
        "causal_dropout_train",
        TransformerBlock(
            type="transformer_block", name="t", num_heads=2, ff_dim=6, dropout=0.3, causal=True
        ),
        ((3, 4),),
        train=True,
    ),
]


@pytest.fixture
def x64() -> Iterator[None]:
    # A context manager: the previous setting comes back even when the test fails.
    with jax.enable_x64(True):
        yield


def _inputs(case: Case, rng: np.random.Generator) -> list[np.ndarray]:
    if case.token_ids is not None:
        return [case.token_ids]
    shapes = [(case.batch, *shape) for shape in case.in_shapes]
    if case.distinct:
        return [0.1 * rng.permutation(np.prod(s)).reshape(s) - 1.0 for s in shapes]
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.spec.type}-{c.label}" if c.label else c.spec.type for c in CASES]
)
def test_gradient_matches_finite_differences(case: Case, x64: None) -> None:
    layer = build_layer(case.spec)
    layer.check(case.in_shapes)
    assert_gradients_match_finite_differences(layer, case)


def assert_gradients_match_finite_differences(layer: Layer[Any], case: Case) -> None:
    """Compare d(Σ output · w)/d(inputs, params) from `jax.grad` with central differences."""
    rng = np.random.default_rng(0)
    params, state = layer.init(jax.random.PRNGKey(0), case.in_shapes)
    # Move off the initial point (zero biases, unit scales) to a generic one, in float64.
    params = jax.tree.map(
        lambda p: np.asarray(p, np.float64) + 0.3 * rng.standard_normal(p.shape), params
    )
    state = case.make_state(rng, state) if case.make_state else jax.tree.map(np.float64, state)
    key = jax.random.PRNGKey(7) if layer.uses_rng else None
    inputs = _inputs(case, rng)

    def output(inputs: Sequence[Any], params: Params) -> jax.Array:
        return layer.apply(params, state, inputs, train=case.train, key=key)[0]

    out_shape = jax.eval_shape(output, inputs, params).shape
    weights = rng.standard_normal(out_shape)
    fixed_inputs = case.token_ids is not None
    wrt = {"params": params} if fixed_inputs else {"params": params, "inputs": inputs}
    flat, unravel = ravel_pytree(wrt)
    assert flat.dtype == jnp.float64

    def f(theta: jax.Array) -> jax.Array:
        point = unravel(theta)
        return jnp.sum(
            output(inputs if fixed_inputs else point["inputs"], point["params"]) * weights
        )

    @jax.jit  # one compilation per case: eager op-by-op dispatch is far slower here
    def grad_and_differences(theta: jax.Array) -> tuple[jax.Array, jax.Array]:
        steps = EPS * jnp.eye(theta.size, dtype=theta.dtype)
        values = jax.vmap(f)(jnp.concatenate([theta + steps, theta - steps]))
        plus, minus = jnp.split(values, 2)
        return jax.grad(f)(theta), (plus - minus) / (2 * EPS)

    grad, differences = grad_and_differences(flat)
    analytic, numeric = unravel(grad), unravel(differences)

    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(analytic), jax.tree.leaves(numeric), strict=True
    ):
        name = jax.tree_util.keystr(path)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)


def test_every_layer_type_has_a_gradient_check() -> None:
    assert {case.spec.type for case in CASES} == set(LAYERS)


def test_every_activation_has_a_gradient_check() -> None:
    covered = {case.spec.fn for case in CASES if case.spec.type == "activation"}
    assert covered == set(ACTIVATIONS)


class _WrongGradient(Layer[Any]):
    """y = x², but claims dy/dx = x: the harness above must catch it."""

    def apply(
        self,
        params: Params,
        state: State,
        inputs: Sequence[jax.Array],
        *,
        train: bool,
        key: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        @jax.custom_vjp
        def square(x: jax.Array) -> jax.Array:
            return x * x

        square.defvjp(lambda x: (x * x, x), lambda x, g: (g * x,))
        return square(inputs[0]), state


def test_the_check_catches_a_wrong_gradient(x64: None) -> None:
    case = Case("", Flatten(type="flatten", name="f"), ((3,),))
    with pytest.raises(AssertionError, match="inputs"):
        assert_gradients_match_finite_differences(_WrongGradient(case.spec), case)
