"""2-D convolution, NHWC activations and HWIO kernels, fast inside `lax.scan` on XLA:CPU.

`conv2d` has the contract of `lax.conv_general_dilated(x, kernel, strides, padding,
dimension_numbers=("NHWC", "HWIO", "NHWC"))`. On an accelerator it *is* that call. On
XLA:CPU it is a `jax.custom_vjp` whose forward and backward passes are built from
*one-dimensional* convolutions plus cheap data movement, because of what was measured on
the 2-core CPU machines (JAX 0.10, conv 128×14×14×32 → 64, 3×3; ms):

* XLA:CPU hands a plain 2-D convolution to YNNPACK, which runs it on **one thread**
  (forward ≈ 10.5, CPU time / wall time = 1.0), while dots and 1-D convolutions run on
  all cores (Eigen/YNNPACK, ≈ 160 GFLOP/s: the same work as a 1-D conv takes 5.5).
* The weight gradient that autodiff emits is a convolution with non-canonical dimension
  labels; inside a while loop (`lax.scan`) XLA:CPU falls back to a naive loop nest for it:
  1.3 *seconds* instead of 17 ms. Every convolution built here is canonical
  (`NWC`/`WIO`/`NWC` with the batch, space and feature dimensions in order), so it runs
  the same inside and outside loops.
* Building a full im2col matrix (kh·kw copies of the input) costs more than the matmul it
  feeds: XLA:CPU's concatenate along the minor dimension moves 32-float chunks at a few
  GB/s (≈ 8–12 ms for the 29 MB patch matrix). A tap-sum of kh·kw small dots avoids the
  copy but writes kh·kw partial outputs; both lose to the 1-D form below.

So the kernel's rows (kh taps) are folded into the channel dimension with kh shifted
slices of the input ("row im2col", kh× the input instead of kh·kw×), and the kernel's
columns are left to a 1-D convolution along the width, which XLA runs multi-threaded. The
gradients use the same idea: the input gradient folds the rows into the 1-D conv's
*output* channels and adds kh row-shifted slices back (cheaper when Cin < Cout); the
kernel gradient is a canonical 1-D convolution of the row-im2col'ed, transposed input
with the transposed output gradient.

The custom path is chosen at trace time, only when `jax.default_backend() == "cpu"` and
the dtype is float32 or float64; anything else uses `lax.conv_general_dilated`.

Differentiation: reverse mode (`jax.grad`, `jax.vjp`) w.r.t. both `x` and `kernel`, first
order. The backward rule is built from differentiable lax ops, so reverse-over-reverse
also works, but forward mode (`jax.jvp`, `jax.jacfwd`) is not supported on the CPU path
(a `custom_vjp` limitation).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv2d"]

Pads = tuple[tuple[int, int], tuple[int, int]]
Strides = tuple[int, int]

_DN_2D = ("NHWC", "HWIO", "NHWC")
_DN_1D = ("NWC", "WIO", "NWC")
_FAST_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))

# With one input channel the forward conv is memory-bound (it writes Cout values per
# input value) and every im2col or 1-D form only adds traffic: YNNPACK's direct 2-D conv,
# single-threaded as it is, is the fastest choice there (128×28×28×1 → 32, 3×3, relu:
# direct 6.0 ms of CPU time vs 9.1 for the 1-D form). A fused elementwise stencil was
# faster still in isolation (4.2) but inside the training loop XLA re-computes a fusible
# conv output in every consumer (up to 16× per element in a 2×2 max-pool gradient) and
# the step got 35% slower, so the conv output must come from a non-fusible op.
_DIRECT_MAX_CIN = 1


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
) -> jax.Array:
    """2-D cross-correlation (what deep-learning frameworks call convolution).

    Args:
      x: input, shape [N, H, W, Cin].
      kernel: filters, shape [kh, kw, Cin, Cout] (HWIO), same dtype as `x`.
      strides: (sh, sw), or one int for both; each >= 1.
      padding: "SAME" or "VALID" (case-insensitive) with TensorFlow/Keras semantics (SAME:
        output ceil(H / sh), total padding max((Ho - 1)·sh + kh - H, 0), the smaller half
        before), or explicit ((top, bottom), (left, right)) non-negative pairs.

    Returns:
      y, shape [N, Ho, Wo, Cout]: y[n, i, j, o] = Σ_{a, b, c} xpad[n, i·sh + a, j·sw + b, c]
      · kernel[a, b, c, o], the values of `lax.conv_general_dilated` with dimension
      numbers ("NHWC", "HWIO", "NHWC") up to float rounding.
    """
    x = jnp.asarray(x)
    kernel = jnp.asarray(kernel)
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"conv2d expects x [N, H, W, Cin] and kernel [kh, kw, Cin, Cout]; "
            f"got shapes {x.shape} and {kernel.shape}"
        )
    if x.shape[3] != kernel.shape[2]:
        raise ValueError(
            f"conv2d: x has {x.shape[3]} input channels but kernel expects {kernel.shape[2]}"
        )
    if x.dtype != kernel.dtype:
        raise TypeError(f"conv2d: x is {x.dtype} but kernel is {kernel.dtype}")
    strides_ = as_pair(strides, "strides")
    pads = _resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides_)
    out_h, out_w = _out_size(x.shape[1:3], kernel.shape[:2], strides_, pads)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"conv2d: a {kernel.shape[0]}×{kernel.shape[1]} kernel does not fit the "
            f"{x.shape[1]}×{x.shape[2]} input with padding {padding!r}"
        )
    if not _use_cpu_path(x.dtype):
        return lax.conv_general_dilated(x, kernel, strides_, pads, dimension_numbers=_DN_2D)
    return _conv_cpu(x, kernel, strides_, pads)


# --------------------------------------------------------------------------- helpers


def _use_cpu_path(dtype: jnp.dtype) -> bool:
    """The custom path is a CPU decision made at trace time; GPUs keep cuDNN's conv."""
    return jax.default_backend() == "cpu" and jnp.dtype(dtype) in _FAST_DTYPES


def as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """`3` → (3, 3); a pair stays a pair; both entries must be ≥ 1 (windows, strides)."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        items = tuple(int(v) for v in value)
        if len(items) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (items[0], items[1])
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def _resolve_padding(
    padding: str | Sequence[tuple[int, int]],
    spatial: Sequence[int],
    window: Sequence[int],
    strides: Strides,
) -> Pads:
    pairs: list[tuple[int, ...]]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
        pairs = [tuple(p) for p in lax.padtype_to_pads(spatial, window, strides, mode)]
    else:
        pairs = [tuple(int(v) for v in p) for p in padding]
    if len(pairs) != 2 or any(len(p) != 2 for p in pairs):
        raise ValueError(f"explicit padding must be two (low, high) pairs, got {padding!r}")
    if any(v < 0 for p in pairs for v in p):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    (ph0, ph1), (pw0, pw1) = pairs
    return (ph0, ph1), (pw0, pw1)


def _out_size(spatial: Sequence[int], window: Sequence[int], strides: Strides, pads: Pads):
    return tuple(
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(spatial, window, strides, pads, strict=True)
    )


def _conv1d(
    lhs: jax.Array,
    rhs: jax.Array,
    *,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    lhs_dilation: int = 1,
    rhs_dilation: int = 1,
) -> jax.Array:
    """A canonical 1-D conv ([B, L, F] × [K, F, O] → [B, L', O]): XLA:CPU runs it on all
    cores and, unlike the non-canonical convs autodiff emits, also inside loops."""
    return lax.conv_general_dilated(
        lhs,
        rhs,
        (stride,),
        (padding,),
        lhs_dilation=(lhs_dilation,),
        rhs_dilation=(rhs_dilation,),
        dimension_numbers=_DN_1D,
    )


def _row_slices(arr: jax.Array, axis: int, count: int, length: int, stride: int) -> list[jax.Array]:
    """`count` slices arr[..., a : a + (length-1)·stride + 1 : stride, ...], a = 0..count-1."""
    out = []
    for a in range(count):
        start = [0] * arr.ndim
        limit = list(arr.shape)
        step = [1] * arr.ndim
        start[axis] = a
        limit[axis] = a + (length - 1) * stride + 1
        step[axis] = stride
        out.append(lax.slice(arr, start, limit, step))
    return out


# --------------------------------------------------------------------------- CPU path


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_cpu(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Pads) -> jax.Array:
    return _forward(x, kernel, strides, pads)


def _conv_cpu_fwd(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Pads):
    return _forward(x, kernel, strides, pads), (x, kernel)


def _conv_cpu_bwd(strides: Strides, pads: Pads, residuals, g: jax.Array):
    x, kernel = residuals
    dx = _grad_input(g, kernel, x.shape, strides, pads)
    dk = _grad_kernel(x, g, kernel.shape, strides, pads)
    return dx, dk


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def _forward(x: jax.Array, kernel: jax.Array, strides: Strides, pads: Pads) -> jax.Array:
    n, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    sh, sw = strides
    (ph0, ph1), (pw0, pw1) = pads
    out_h, out_w = _out_size((h, w), (kh, kw), strides, pads)
    if cin <= _DIRECT_MAX_CIN:
        return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN_2D)
    hp, wp = h + ph0 + ph1, w + pw0 + pw1
    # Fold the kh kernel rows into the contraction on whichever side is smaller: the
    # input (kh row-shifted copies of x) or the output (a 1-D conv with kh·Cout outputs
    # whose row-shifted slices are summed).
    if cin * out_h * wp <= cout * hp * out_w:
        # Row a of the kernel reads padded row i·sh + a, i.e. x row i·sh + a - ph0. Each
        # shifted copy is a pad (negative = crop) of x, so XLA fuses the zero rows, the
        # shifts and the concatenation into one pass; the width padding is left to the
        # 1-D conv (≈ 12% faster than padding x first and slicing).
        zero = jnp.zeros((), x.dtype)
        span = (out_h - 1) * sh + 1
        rows = []
        for a in range(kh):
            row = lax.pad(
                x, zero, ((0, 0, 0), (ph0 - a, span - h - ph0 + a, 0), (0, 0, 0), (0, 0, 0))
            )
            rows.append(row if sh == 1 else row[:, ::sh])
        x3 = rows[0] if kh == 1 else jnp.concatenate(rows, axis=3)  # [N, Ho, W, kh·Cin]
        k3 = jnp.transpose(kernel, (1, 0, 2, 3)).reshape(kw, kh * cin, cout)
        y = _conv1d(x3.reshape(n * out_h, w, kh * cin), k3, stride=sw, padding=(pw0, pw1))
        return y.reshape(n, out_h, out_w, cout)
    xp = jnp.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)))
    k3 = jnp.transpose(kernel, (1, 2, 0, 3)).reshape(kw, cin, kh * cout)
    z = _conv1d(xp.reshape(n * hp, wp, cin), k3, stride=sw).reshape(n, hp, out_w, kh, cout)
    parts = _row_slices(z, 1, kh, out_h, sh)
    return functools.reduce(jnp.add, [p[:, :, :, a, :] for a, p in enumerate(parts)])


def _grad_input(
    g: jax.Array, kernel: jax.Array, x_shape: Sequence[int], strides: Strides, pads: Pads
) -> jax.Array:
    """dx[n, i, j, c] = Σ g[n, h, w, o] · kernel[a, b, c, o] over i = h·sh + a - ph0,
    j = w·sw + b - pw0. The width part is a transposed 1-D conv (lhs dilation sw)."""
    n, h, w, cin = x_shape
    kh, kw, _, cout = kernel.shape
    sh, sw = strides
    (ph0, _), (pw0, _) = pads
    out_h, out_w = g.shape[1], g.shape[2]
    lo_w = kw - 1 - pw0
    hi_w = w + kw - 1 - lo_w - ((out_w - 1) * sw + 1)
    if sh == 1 and cout * out_w < cin * w:
        # Input side: kh row-shifted copies of g (fewer bytes than kh copies of dx).
        lo_h = kh - 1 - ph0
        gh = lax.pad(
            g,
            jnp.zeros((), g.dtype),
            ((0, 0, 0), (lo_h, h + kh - 1 - lo_h - out_h, 0), (0, 0, 0), (0, 0, 0)),
        )
        rows = _row_slices(gh, 1, kh, h, 1)  # kh × [N, H, Wo, Cout]
        g3 = rows[0] if kh == 1 else jnp.concatenate(rows, axis=3)
        # k3[b', (a', o), c] = kernel[kh-1-a', kw-1-b', c, o]
        k3 = jnp.transpose(kernel[::-1, ::-1], (1, 0, 3, 2)).reshape(kw, kh * cout, cin)
        dx = _conv1d(g3.reshape(n * h, out_w, kh * cout), k3, padding=(lo_w, hi_w), lhs_dilation=sw)
        return dx.reshape(n, h, w, cin)
    # Output side: one 1-D conv gives every kernel row's contribution, z[..., a, c]; row
    # h of tap a lands on input row h·sh + a - ph0 (an interior-padded shift).
    k3 = jnp.transpose(kernel[:, ::-1], (1, 3, 0, 2)).reshape(kw, cout, kh * cin)
    z = _conv1d(
        g.reshape(n * out_h, out_w, cout), k3, padding=(lo_w, hi_w), lhs_dilation=sw
    ).reshape(n, out_h, w, kh, cin)
    zero = jnp.zeros((), g.dtype)
    span = (out_h - 1) * sh + 1
    parts = [
        lax.pad(
            z[:, :, :, a, :],
            zero,
            ((0, 0, 0), (a - ph0, h - (a - ph0) - span, sh - 1), (0, 0, 0), (0, 0, 0)),
        )
        for a in range(kh)
    ]
    return functools.reduce(jnp.add, parts)


def _grad_kernel(
    x: jax.Array, g: jax.Array, kernel_shape: Sequence[int], strides: Strides, pads: Pads
) -> jax.Array:
    """dk[a, b, c, o] = Σ_{n, h, w} xpad[n, h·sh + a, w·sw + b, c] · g[n, h, w, o]."""
    n, _, w, cin = x.shape
    kh, kw, _, cout = kernel_shape
    sh, sw = strides
    (ph0, ph1), (pw0, pw1) = pads
    out_h, out_w = g.shape[1], g.shape[2]
    wp = w + pw0 + pw1
    m = n * out_h * out_w
    if kh * kw * cin * m <= kh * cin * wp * n * out_h + cout * m:
        # Few input channels: the transposed patch matrix [kh·kw·Cin, M] is small, and
        # one dot with g [M, Cout] (no transpose of the large g) is the whole gradient.
        xp = jnp.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)))
        xt = jnp.transpose(xp, (3, 0, 1, 2))  # [Cin, N, Hp, Wp]; a reshape when Cin == 1
        taps = []
        for a in range(kh):
            for b in range(kw):
                taps.append(
                    lax.slice(
                        xt,
                        (0, 0, a, b),
                        (cin, n, a + (out_h - 1) * sh + 1, b + (out_w - 1) * sw + 1),
                        (1, 1, sh, sw),
                    )
                )
        pt = jnp.stack(taps).reshape(kh * kw * cin, m)
        dk = lax.dot_general(pt, g.reshape(m, cout), (((1,), (0,)), ((), ())))
        return dk.reshape(kh, kw, cin, cout)
    # A canonical 1-D conv: batch = (kernel row a, c), space = input width, feature =
    # (n, output row); the "kernel" is g laid out [Wo, (n, h), Cout] and dilated by sw.
    xt = jnp.transpose(x, (3, 2, 0, 1))  # [Cin, W, N, H]
    xt = jnp.pad(xt, ((0, 0), (pw0, pw1), (0, 0), (ph0, ph1)))  # [Cin, Wp, N, Hp]
    rows = _row_slices(xt, 3, kh, out_h, sh)  # kh × [Cin, Wp, N, Ho]
    lhs = jnp.stack(rows).reshape(kh * cin, wp, n * out_h)
    rhs = jnp.transpose(g, (2, 0, 1, 3)).reshape(out_w, n * out_h, cout)
    out = _conv1d(lhs, rhs, rhs_dilation=sw)  # [kh·Cin, Wp - (Wo-1)·sw, Cout]
    out = out[:, :kw].reshape(kh, cin, kw, cout)
    return jnp.transpose(out, (0, 2, 1, 3))
