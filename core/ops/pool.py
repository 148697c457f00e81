"""2-D pooling over NHWC arrays with Keras semantics and a fast XLA:CPU path.

The contract is that of `lax.reduce_window`-based pooling (Keras `MaxPooling2D`,
`AveragePooling2D`, `GlobalAveragePooling2D`, channels last):

* `padding="valid"` drops the windows that would overhang; `"same"` gives ceil(H / s)
  outputs with the total padding max((Ho - 1)·s + p - H, 0), the smaller half before.
  Max pooling pads with -inf; average pooling divides by the number of *real* elements
  in each window (padding is not counted), like TensorFlow.
* Max pooling's gradient goes, in each window, to the **first** element (row-major
  order within the window) equal to the window's maximum, as XLA's `select_and_scatter`
  does for `reduce_window` — so ties never split the gradient.

Why not `reduce_window` on CPU: the max-pool gradient JAX emits for it (a
`select_and_scatter` built from iotas, pairs and scatters) costs ≈ 50 ms for the
benchmark's 128×28×28×32 activation on the 2-core machines; the reshape + compare
gradient here costs ≈ 4 ms together with the relu in front of it. On other backends
the `lax` ops are used unchanged.

CPU paths, chosen at trace time:

* non-overlapping windows (pool_size == strides): reshape [N, Ho, p, Wo, q, C] and reduce
  the window axes; the max gradient is one fused elementwise pass over that layout
  ("equals the maximum and no earlier element of the window does"), or, for windows of
  more than 16 elements, the index of the first maximum followed by a select.
* any other pool_size/strides: the p·q strided slices of the padded input, combined
  elementwise (one fused pass), with the matching interior-padded scatter for the
  gradient.

Differentiation: `max_pool2d` on CPU is a `jax.custom_vjp` (reverse mode, also
reverse-over-reverse; no forward mode); the average pools are plain differentiable jnp.
Only float32/float64 take the CPU paths; other dtypes use `lax.reduce_window`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from core.ops.conv import as_pair

__all__ = ["avg_pool2d", "global_avg_pool2d", "max_pool2d"]

Pads = tuple[tuple[int, int], tuple[int, int]]
Pair = tuple[int, int]
_FAST_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))
# Non-overlapping windows up to this many elements get the fully unrolled gradient.
_UNROLLED_WINDOW_MAX = 16


def max_pool2d(
    x: jax.Array,
    pool_size: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: str = "VALID",
) -> jax.Array:
    """Max pooling (Keras `MaxPooling2D`, channels last).

    Args:
      x: [N, H, W, C].
      pool_size: (p, q), or one int for both.
      strides: (sh, sw), one int, or None for `pool_size`.
      padding: "valid" or "same" (case-insensitive); "same" pads with -inf.

    Returns:
      [N, Ho, Wo, C]. Gradients flow to the first maximum of each window (row-major).
    """
    x, window, strides_, pads, _ = _prepare(x, pool_size, strides, padding, "max_pool2d")
    if not _use_cpu_path(x.dtype):
        # A Python scalar init lets JAX recognise the max monoid (reduce_window_max, which
        # has a gradient); an array init would give the generic reduce_window.
        init = -np.inf if jnp.issubdtype(x.dtype, jnp.floating) else int(jnp.iinfo(x.dtype).min)
        return lax.reduce_window(
            x,
            init,
            lax.max,
            (1, *window, 1),
            (1, *strides_, 1),
            ((0, 0), *pads, (0, 0)),
        )
    return _max_pool_cpu(x, window, strides_, pads)


def avg_pool2d(
    x: jax.Array,
    pool_size: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: str = "VALID",
) -> jax.Array:
    """Average pooling (Keras `AveragePooling2D`, channels last).

    Args:
      x: [N, H, W, C], floating point.
      pool_size: (p, q), or one int for both.
      strides: (sh, sw), one int, or None for `pool_size`.
      padding: "valid" or "same" (case-insensitive); with "same" each output is the mean
        of the window's real elements (padding is not counted).

    Returns:
      [N, Ho, Wo, C].
    """
    x, window, strides_, pads, out = _prepare(x, pool_size, strides, padding, "avg_pool2d")
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"avg_pool2d needs a floating-point input, got {x.dtype}")
    inv_count = _inverse_counts(x.shape[1:3], window, strides_, pads, out, x.dtype)
    if not _use_cpu_path(x.dtype):
        sums = lax.reduce_window(
            x,
            0.0,
            lax.add,
            (1, *window, 1),
            (1, *strides_, 1),
            ((0, 0), *pads, (0, 0)),
        )
    elif window == strides_:
        sums = _window_view(_pad(x, pads, 0.0), window, out).sum(axis=(2, 4))
    else:
        slices = _window_slices(_pad(x, pads, 0.0), window, strides_, out)
        sums = functools.reduce(jnp.add, slices)
    return sums * inv_count


def global_avg_pool2d(x: jax.Array) -> jax.Array:
    """Global average pooling (Keras `GlobalAveragePooling2D`): [N, H, W, C] → [N, C]."""
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"global_avg_pool2d expects [N, H, W, C], got shape {x.shape}")
    return jnp.mean(x, axis=(1, 2))


# --------------------------------------------------------------------------- helpers


def _use_cpu_path(dtype: jnp.dtype) -> bool:
    return jax.default_backend() == "cpu" and jnp.dtype(dtype) in _FAST_DTYPES


def _prepare(
    x: jax.Array,
    pool_size: int | Sequence[int],
    strides: int | Sequence[int] | None,
    padding: str,
    name: str,
) -> tuple[jax.Array, Pair, Pair, Pads, Pair]:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} expects [N, H, W, C], got shape {x.shape}")
    window = as_pair(pool_size, "pool_size")
    strides_ = window if strides is None else as_pair(strides, "strides")
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"{name}: padding must be 'valid' or 'same', got {padding!r}")
    (ph0, ph1), (pw0, pw1) = lax.padtype_to_pads(x.shape[1:3], window, strides_, padding.upper())
    pads = ((ph0, ph1), (pw0, pw1))
    out = (
        (x.shape[1] + ph0 + ph1 - window[0]) // strides_[0] + 1,
        (x.shape[2] + pw0 + pw1 - window[1]) // strides_[1] + 1,
    )
    if min(out) <= 0:
        raise ValueError(
            f"{name}: a {window[0]}×{window[1]} window does not fit the "
            f"{x.shape[1]}×{x.shape[2]} input with padding {padding!r}"
        )
    return x, window, strides_, pads, out


def _inverse_counts(
    spatial: Sequence[int], window: Pair, strides: Pair, pads: Pads, out: Pair, dtype
) -> jax.Array:
    """1 / (number of real elements in each window), shape [Ho, Wo, 1] (a constant)."""
    per_axis = []
    for n, k, s, (lo, _), o in zip(spatial, window, strides, pads, out, strict=True):
        starts = np.arange(o) * s - lo
        per_axis.append(np.minimum(starts + k, n) - np.maximum(starts, 0))
    counts = np.outer(per_axis[0], per_axis[1])[:, :, None]
    return jnp.asarray(1.0 / counts, dtype)


def _pad(x: jax.Array, pads: Pads, value: float) -> jax.Array:
    if not any(v for p in pads for v in p):
        return x
    return jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)


def _window_view(xp: jax.Array, window: Pair, out: Pair) -> jax.Array:
    """Non-overlapping windows as axes: [N, Ho·p (+rest), Wo·q (+rest), C] → [N, Ho, p,
    Wo, q, C], dropping the rows/columns a "valid" pooling never reads."""
    n, _, _, c = xp.shape
    (p, q), (oh, ow) = window, out
    xp = xp[:, : oh * p, : ow * q, :]
    return xp.reshape(n, oh, p, ow, q, c)


def _window_slices(xp: jax.Array, window: Pair, strides: Pair, out: Pair) -> list[jax.Array]:
    """The p·q strided views xp[:, i::sh, j::sw] cropped to [N, Ho, Wo, C], row-major."""
    n, _, _, c = xp.shape
    (p, q), (sh, sw), (oh, ow) = window, strides, out
    return [
        lax.slice(
            xp, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c), (1, sh, sw, 1)
        )
        for i in range(p)
        for j in range(q)
    ]


# --------------------------------------------------------------------------- max pool


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_cpu(x: jax.Array, window: Pair, strides: Pair, pads: Pads) -> jax.Array:
    return _max_forward(x, window, strides, pads)


def _max_forward(x: jax.Array, window: Pair, strides: Pair, pads: Pads) -> jax.Array:
    out = _out(x, window, strides, pads)
    xp = _pad(x, pads, -jnp.inf)
    if window == strides:
        return _window_view(xp, window, out).max(axis=(2, 4))
    return functools.reduce(jnp.maximum, _window_slices(xp, window, strides, out))


def _max_pool_cpu_fwd(x: jax.Array, window: Pair, strides: Pair, pads: Pads):
    y = _max_forward(x, window, strides, pads)
    return y, (x, y)


def _max_pool_cpu_bwd(window: Pair, strides: Pair, pads: Pads, residuals, g: jax.Array):
    x, y = residuals
    n, h, w, c = x.shape
    out = _out(x, window, strides, pads)
    (p, q), (sh, sw) = window, strides
    (ph0, ph1), (pw0, pw1) = pads
    xp = _pad(x, pads, -jnp.inf)
    zero = jnp.zeros((), g.dtype)
    hp, wp = h + ph0 + ph1, w + pw0 + pw1
    if window == strides:
        view = _window_view(xp, window, out)  # [N, Ho, p, Wo, q, C]
        shape = (1, 1, p, 1, q, 1)
        row_in_window = lax.broadcasted_iota(jnp.int32, shape, 2)
        pos = row_in_window * q + lax.broadcasted_iota(jnp.int32, shape, 4)  # row-major
        ymax = y[:, :, None, :, None, :]
        if p * q <= _UNROLLED_WINDOW_MAX:
            # One elementwise pass over the window layout: an element gets g if it equals
            # the maximum and no element before it (row-major) in its window does. The
            # "before" test reads the p·q - 1 leading window elements through size-1
            # slices broadcast back over the window, so XLA fuses everything into one
            # loop that writes dx. Measured (relu + 2×2 pool, forward and backward,
            # 128×28×28×32, CPU ms): 4.4 here, 5.6 stacking p·q shares, 11 with the
            # index-then-select form below, 51 with reduce_window's gradient.
            earlier = jnp.zeros(shape, bool)
            seen = None
            for k in range(p * q - 1):
                i, j = divmod(k, q)
                hit_k = view[:, :, i : i + 1, :, j : j + 1, :] == ymax
                seen = hit_k if seen is None else seen | hit_k
                earlier = jnp.where(pos == k + 1, seen, earlier)
            dview = jnp.where((view == ymax) & ~earlier, g[:, :, None, :, None, :], zero)
        else:
            # Large windows: the position of the first maximum, then route g to it.
            first = jnp.min(jnp.where(view == ymax, pos, p * q), axis=(2, 4))
            hit = pos == first[:, :, None, :, None, :]
            dview = jnp.where(hit, g[:, :, None, :, None, :], zero)
        dxp = dview.reshape(n, out[0] * p, out[1] * q, c)
        dxp = jnp.pad(dxp, ((0, 0), (0, hp - out[0] * p), (0, wp - out[1] * q), (0, 0)))
    else:
        # Overlapping or gapped windows: scatter each window position's share back with
        # an interior-padded shift; `taken` enforces "first maximum wins".
        span_h, span_w = (out[0] - 1) * sh + 1, (out[1] - 1) * sw + 1
        taken = jnp.zeros(y.shape, bool)
        parts = []
        for k, sl in enumerate(_window_slices(xp, window, strides, out)):
            i, j = divmod(k, q)
            hit = (sl == y) & ~taken
            taken = taken | hit
            share = jnp.where(hit, g, zero)
            parts.append(
                lax.pad(
                    share,
                    zero,
                    (
                        (0, 0, 0),
                        (i, hp - i - span_h, sh - 1),
                        (j, wp - j - span_w, sw - 1),
                        (0, 0, 0),
                    ),
                )
            )
        dxp = functools.reduce(jnp.add, parts)
    return (dxp[:, ph0 : ph0 + h, pw0 : pw0 + w, :],)


_max_pool_cpu.defvjp(_max_pool_cpu_fwd, _max_pool_cpu_bwd)


def _out(x: jax.Array, window: Pair, strides: Pair, pads: Pads) -> Pair:
    return (
        (x.shape[1] + pads[0][0] + pads[0][1] - window[0]) // strides[0] + 1,
        (x.shape[2] + pads[1][0] + pads[1][1] - window[1]) // strides[1] + 1,
    )
