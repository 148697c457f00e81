"""Pooling against lax.reduce_window: values, gradients (ties included), scan and jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from core.ops import avg_pool2d, global_avg_pool2d, max_pool2d


def _pads(x, window, strides, padding):
    return ((0, 0), *lax.padtype_to_pads(x.shape[1:3], window, strides, padding.upper()), (0, 0))


def ref_max(x, window, strides, padding):
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), _pads(x, window, strides, padding)
    )


def ref_avg(x, window, strides, padding):
    pads = _pads(x, window, strides, padding)
    total = lax.reduce_window(x, 0.0, lax.add, (1, *window, 1), (1, *strides, 1), pads)
    count = lax.reduce_window(
        jnp.ones_like(x), 0.0, lax.add, (1, *window, 1), (1, *strides, 1), pads
    )
    return total / count


def compare(ours, ref, x, rtol, atol, seed=0):
    y_shape = jax.eval_shape(ref, x).shape
    g = jnp.asarray(np.random.default_rng(seed).standard_normal(y_shape), x.dtype)

    def both(fn):
        # x and g are arguments, not closed-over constants, so nothing is constant-folded
        # at compile time and the compiled CPU kernels are what is tested.
        def run(x, g):
            y, vjp = jax.vjp(fn, x)
            return y, vjp(g)[0]

        return jax.jit(run)(x, g)

    got = both(ours)
    want = both(ref)
    for name, a, b in zip(("y", "dx"), got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=name)


def tie_heavy(shape, dtype, seed=0):
    """Values rounded to a coarse grid, half of them relu'd to zero: many exact ties."""
    v = np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray(np.maximum(np.round(v * 2) / 2, 0.0), dtype)


POOL_CASES = [
    ((2, 2), None, "valid"),
    ((2, 2), None, "same"),
    ((3, 3), None, "valid"),
    ((3, 3), None, "same"),
    ((2, 3), None, "same"),
    ((2, 2), (1, 1), "valid"),
    ((3, 3), (2, 2), "same"),
    ((3, 3), (2, 2), "valid"),
    ((2, 3), (3, 2), "same"),
    ((1, 1), (2, 2), "valid"),
    ((5, 4), None, "same"),  # more than 16 elements: the index-then-select gradient
]
SIZES = [(2, 8, 8, 3), (2, 7, 9, 2)]


@pytest.mark.parametrize("xshape", SIZES)
@pytest.mark.parametrize(("window", "strides", "padding"), POOL_CASES)
def test_max_pool_matches_reduce_window_float64(x64, xshape, window, strides, padding):
    x = tie_heavy(xshape, jnp.float64)
    s = window if strides is None else strides
    compare(
        lambda x: max_pool2d(x, window, strides, padding),
        lambda x: ref_max(x, window, s, padding),
        x,
        # Overlapping windows add several shares into one element: only the order of
        # those additions may differ. A tie routed to the wrong element is an O(1) error.
        rtol=1e-13,
        atol=1e-13,
    )


@pytest.mark.parametrize("xshape", SIZES)
@pytest.mark.parametrize(("window", "strides", "padding"), POOL_CASES)
def test_avg_pool_matches_reduce_window_float64(x64, xshape, window, strides, padding):
    x = jnp.asarray(np.random.default_rng(1).standard_normal(xshape))
    s = window if strides is None else strides
    compare(
        lambda x: avg_pool2d(x, window, strides, padding),
        lambda x: ref_avg(x, window, s, padding),
        x,
        rtol=1e-13,
        atol=1e-13,
    )


@pytest.mark.parametrize(("window", "strides", "padding"), [POOL_CASES[0], POOL_CASES[6]])
def test_float32(window, strides, padding):
    s = window if strides is None else strides
    x = tie_heavy((4, 28, 28, 8), jnp.float32)
    compare(
        lambda x: max_pool2d(x, window, strides, padding),
        lambda x: ref_max(x, window, s, padding),
        x,
        rtol=1e-6,
        atol=1e-6,
    )
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 28, 28, 8)), jnp.float32)
    compare(
        lambda x: avg_pool2d(x, window, strides, padding),
        lambda x: ref_avg(x, window, s, padding),
        x,
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("strides", [None, (1, 1)])
def test_max_pool_tie_goes_to_first_element(strides):
    x = jnp.array([[3.0, 3.0], [3.0, 1.0]], jnp.float32)[None, :, :, None]
    grad = jax.grad(lambda x: max_pool2d(x, 2, strides).sum())(x)
    np.testing.assert_array_equal(grad[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_pools_inside_scan_match_reduce_window():
    xs = tie_heavy((3, 4, 12, 12, 5), jnp.float32)

    def make(max_fn, avg_fn):
        def body(carry, x):
            def loss(x):
                return jnp.sum(jnp.sin(max_fn(x)) ** 2) + jnp.sum(avg_fn(x) ** 2)

            value, grad = jax.value_and_grad(loss)(x)
            return carry + jnp.sum(grad * grad), value

        return jax.jit(lambda xs: lax.scan(body, jnp.float32(0), xs))

    got = make(lambda x: max_pool2d(x, 2), lambda x: avg_pool2d(x, 3, 2, "same"))(xs)
    want = make(
        lambda x: ref_max(x, (2, 2), (2, 2), "valid"),
        lambda x: ref_avg(x, (3, 3), (2, 2), "same"),
    )(xs)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


def test_global_avg_pool(x64):
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 7, 3)))
    np.testing.assert_allclose(global_avg_pool2d(x), x.mean(axis=(1, 2)), rtol=1e-14)
    g = jax.grad(lambda x: jnp.sum(global_avg_pool2d(x) * jnp.arange(3.0)))(x)
    np.testing.assert_allclose(g, np.broadcast_to(np.arange(3.0) / 35, x.shape), rtol=1e-14)


def test_integer_max_pool_uses_lax():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.int32).reshape(2, 4, 4, 1)
    y = max_pool2d(x, 2)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y[0, :, :, 0], [[5, 7], [13, 15]])


def test_avg_pool_rejects_integers():
    with pytest.raises(TypeError):
        avg_pool2d(jnp.ones((1, 4, 4, 1), jnp.int32), 2)


def test_other_backends_use_reduce_window(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jnp.zeros((2, 8, 8, 3), jnp.float32)
    prims = {e.primitive.name for e in jax.make_jaxpr(lambda x: max_pool2d(x, 2))(x).eqns}
    assert "reduce_window_max" in prims
    prims = {e.primitive.name for e in jax.make_jaxpr(lambda x: avg_pool2d(x, 2))(x).eqns}
    assert "reduce_window_sum" in prims


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (max_pool2d, ((2, 2), None, "full")),
        (max_pool2d, ((0, 2), None, "valid")),
        (avg_pool2d, ((9, 9), None, "valid")),
        (avg_pool2d, ((2, 2, 2), None, "valid")),
    ],
)
def test_rejects_bad_arguments(fn, args):
    with pytest.raises(ValueError):
        fn(jnp.zeros((1, 8, 8, 1)), *args)


def test_rejects_bad_rank():
    with pytest.raises(ValueError):
        max_pool2d(jnp.zeros((8, 8, 1)), 2)
    with pytest.raises(ValueError):
        global_avg_pool2d(jnp.zeros((8, 8, 1)))
