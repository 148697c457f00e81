"""conv2d against lax.conv_general_dilated: values and gradients, float64 and float32."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from core.ops import conv as conv_module
from core.ops import conv2d

DN = ("NHWC", "HWIO", "NHWC")


def reference(x: jax.Array, k: jax.Array, strides: Any, padding: Any) -> jax.Array:
    if isinstance(strides, int):
        strides = (strides, strides)
    if isinstance(padding, str):
        padding = padding.upper()
    return lax.conv_general_dilated(x, k, tuple(strides), padding, dimension_numbers=DN)


def value_and_grads(fn, x, k, g):
    y, vjp = jax.vjp(fn, x, k)
    dx, dk = vjp(g)
    return y, dx, dk


def run_both(x, k, strides, padding, seed=0):
    def ours(x, k):
        return conv2d(x, k, strides=strides, padding=padding)

    def ref(x, k):
        return reference(x, k, strides, padding)

    y_shape = jax.eval_shape(ref, x, k).shape
    g = jnp.asarray(np.random.default_rng(seed).standard_normal(y_shape), x.dtype)
    got = jax.jit(lambda x, k, g: value_and_grads(ours, x, k, g))(x, k, g)
    want = jax.jit(lambda x, k, g: value_and_grads(ref, x, k, g))(x, k, g)
    return got, want


# (N, H, W, Cin), (kh, kw, Cout), strides, padding — chosen to reach every branch: the
# direct forward (Cin = 1) and the row-im2col forward on the input or the output side,
# the input gradient from either side, the kernel gradient as one dot or as a 1-D conv;
# strides 1, 2, 3 and mixed; odd sizes; kernels 1×1, 3×3, 5×5, 2×4, 4×2.
CASES = [
    ((2, 7, 9, 1), (3, 3, 4), (1, 1), "SAME"),
    ((2, 7, 9, 1), (3, 3, 4), (2, 2), "SAME"),
    ((2, 8, 8, 1), (5, 5, 3), (1, 1), "VALID"),
    ((2, 7, 9, 3), (3, 3, 8), (1, 1), "SAME"),
    ((2, 7, 9, 3), (3, 3, 8), (2, 2), "VALID"),
    ((2, 9, 7, 6), (5, 5, 5), (1, 1), "SAME"),
    ((2, 9, 7, 6), (5, 5, 5), (2, 2), "SAME"),
    ((2, 8, 10, 12), (2, 4, 5), (1, 1), "SAME"),
    ((2, 8, 10, 12), (2, 4, 5), (1, 2), "VALID"),
    ((2, 8, 10, 12), (2, 4, 5), (2, 1), "SAME"),
    ((2, 6, 7, 5), (1, 1, 7), (1, 1), "SAME"),
    ((2, 6, 7, 40), (1, 1, 7), (2, 2), "VALID"),
    ((2, 6, 7, 40), (1, 1, 48), (1, 1), "SAME"),
    ((2, 11, 11, 16), (3, 3, 4), (1, 1), "VALID"),
    ((2, 11, 11, 16), (3, 3, 4), (3, 3), "SAME"),
    ((1, 5, 6, 8), (4, 2, 3), (2, 3), "SAME"),
    ((3, 6, 6, 4), (3, 3, 16), (1, 1), "same"),
    ((2, 10, 10, 8), (3, 3, 8), 2, ((2, 0), (1, 3))),
    ((2, 5, 5, 6), (5, 5, 6), (1, 1), "VALID"),
]


@pytest.mark.parametrize(("xshape", "kshape", "strides", "padding"), CASES)
def test_matches_lax_in_float64(x64, xshape, kshape, strides, padding):
    rng = np.random.default_rng(1)
    kh, kw, cout = kshape
    x = jnp.asarray(rng.standard_normal(xshape))
    k = jnp.asarray(rng.standard_normal((kh, kw, xshape[3], cout)))
    assert x.dtype == jnp.float64
    got, want = run_both(x, k, strides, padding)
    for name, a, b in zip(("y", "dx", "dkernel"), got, want, strict=True):
        assert a.shape == b.shape, name
        assert a.dtype == jnp.float64, name
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-11, err_msg=name
        )


@pytest.mark.parametrize(
    ("xshape", "kshape", "strides", "padding"),
    [CASES[0], CASES[4], CASES[6], CASES[8], CASES[14], ((4, 14, 14, 32), (3, 3, 64), 1, "SAME")],
)
def test_matches_lax_in_float32(xshape, kshape, strides, padding):
    rng = np.random.default_rng(2)
    kh, kw, cout = kshape
    x = jnp.asarray(rng.standard_normal(xshape), jnp.float32)
    k = jnp.asarray(rng.standard_normal((kh, kw, xshape[3], cout)), jnp.float32)
    got, want = run_both(x, k, strides, padding)
    for name, a, b in zip(("y", "dx", "dkernel"), got, want, strict=True):
        assert a.dtype == jnp.float32, name
        scale = float(np.abs(np.asarray(b)).max())
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * scale, err_msg=name
        )


def test_cpu_path_is_the_custom_one():
    # On the CPU backend the op must not be a plain 2-D convolution (that is what is slow).
    x = jnp.zeros((2, 8, 8, 4), jnp.float32)
    k = jnp.zeros((3, 3, 4, 8), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda x, k: conv2d(x, k))(x, k))
    assert jax.default_backend() == "cpu"
    assert "custom_vjp_call" in jaxpr


def test_other_backends_use_lax_conv(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jnp.zeros((2, 8, 8, 4), jnp.float32)
    k = jnp.zeros((3, 3, 4, 8), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda x, k: conv2d(x, k, strides=2))(x, k)
    prims = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    assert prims == ["conv_general_dilated"]
    assert jaxpr.jaxpr.eqns[0].params["window_strides"] == (2, 2)


def test_inside_scan_and_jit_matches_lax():
    """A few SGD steps inside one jitted lax.scan give the same parameters as with lax."""
    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.standard_normal((4, 8, 10, 10, 3)), jnp.float32)
    k1 = jnp.asarray(rng.standard_normal((3, 3, 3, 8)) * 0.3, jnp.float32)
    k2 = jnp.asarray(rng.standard_normal((3, 3, 8, 4)) * 0.3, jnp.float32)

    def make(conv):
        def loss(params, x):
            a, b = params
            h = jax.nn.relu(conv(x, a, 1, "SAME"))
            return jnp.mean(conv(h, b, 2, "VALID") ** 2)

        def step(params, x):
            value, grads = jax.value_and_grad(loss)(params, x)
            return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads), value

        return jax.jit(lambda params, xs: lax.scan(step, params, xs))

    def ours(x, k, s, p):
        return conv2d(x, k, strides=s, padding=p)

    got_params, got_losses = make(ours)((k1, k2), xs)
    want_params, want_losses = make(reference)((k1, k2), xs)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-4)
    for a, b in zip(got_params, want_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_gradient_wrt_kernel_only_and_input_only(x64):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)))
    k = jnp.asarray(rng.standard_normal((3, 3, 3, 5)))

    def f(x, k):
        return jnp.sum(jnp.sin(conv2d(x, k)))

    def r(x, k):
        return jnp.sum(jnp.sin(reference(x, k, 1, "SAME")))

    for arg in (0, 1):
        got = jax.jit(jax.grad(f, arg))(x, k)
        np.testing.assert_allclose(got, jax.jit(jax.grad(r, arg))(x, k), rtol=1e-11)


def test_second_order_reverse_mode_and_no_forward_mode(x64):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)))
    k = jnp.asarray(rng.standard_normal((3, 3, 3, 4)))

    def loss(conv):
        return lambda k: jnp.sum(jnp.tanh(conv(x, k)) ** 2)

    ours = loss(lambda x, k: conv2d(x, k))
    ref = loss(lambda x, k: reference(x, k, 1, "SAME"))
    hess = jax.jit(jax.jacrev(jax.grad(ours)))(k)
    want = jax.jit(jax.jacrev(jax.grad(ref)))(k)
    np.testing.assert_allclose(hess, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(ours, (k,), (k,))


def test_other_dtypes_fall_back_to_lax():
    x = jnp.ones((1, 5, 5, 2), jnp.bfloat16)
    k = jnp.ones((3, 3, 2, 3), jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda x, k: conv2d(x, k))(x, k)
    assert [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns] == ["conv_general_dilated"]


@pytest.mark.parametrize(
    ("xshape", "kshape", "kwargs", "error"),
    [
        ((2, 5, 5, 3), (3, 3, 4, 2), {}, ValueError),
        ((5, 5, 3), (3, 3, 3, 2), {}, ValueError),
        ((2, 5, 5, 3), (3, 3, 3, 2), {"padding": "FULL"}, ValueError),
        ((2, 5, 5, 3), (3, 3, 3, 2), {"strides": 0}, ValueError),
        ((2, 5, 5, 3), (3, 3, 3, 2), {"strides": (1, 1, 1)}, ValueError),
        ((2, 2, 2, 3), (3, 3, 3, 2), {"padding": "VALID"}, ValueError),
        ((2, 5, 5, 3), (3, 3, 3, 2), {"padding": ((-1, 0), (0, 0))}, ValueError),
    ],
)
def test_rejects_bad_arguments(xshape, kshape, kwargs, error):
    with pytest.raises(error):
        conv2d(jnp.zeros(xshape), jnp.zeros(kshape), **kwargs)


def test_rejects_mixed_dtypes():
    with pytest.raises(TypeError):
        conv2d(jnp.zeros((1, 4, 4, 1), jnp.float32), jnp.zeros((3, 3, 1, 1), jnp.bfloat16))


def test_direct_path_is_only_for_single_channel_inputs():
    # YNNPACK's direct conv is single-threaded: only the memory-bound Cin = 1 case uses it
    # (the cases above cover both sides).
    assert conv_module._DIRECT_MAX_CIN == 1
