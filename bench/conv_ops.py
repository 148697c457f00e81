"""Benchmark: the CNN training step with `lax` ops vs `core.ops`, and PyTorch eager.

Not a test. Prints two tables, every variant timed side by side in the same process,
interleaved round by round (the machines are shared and noisy), median over rounds:

1. samples/s of one training step of the benchmark CNN (28×28×1 → conv 32 3×3 same +
   relu → max-pool 2 → conv 64 3×3 same + relu → max-pool 2 → dense 128 relu → dense 10,
   softmax cross-entropy, Adam, batch 128):
     (a) `lax` ops, one jitted call per step;
     (b) `lax` ops, many steps in one jitted `lax.scan` (only --slow-steps steps per call:
         XLA:CPU's weight-gradient conv inside a loop takes ~0.7 s);
     (c) `core.ops`, many steps in one jitted `lax.scan` (what the engine runs);
     (d) PyTorch eager, if torch is installed.
2. ms per op for the second conv (128×14×14×32 → 64, 3×3 same): forward, input gradient
   (dX) and kernel gradient (dW), called alone and inside a `lax.scan`.

CPU ms/step is the process's CPU time (all threads): it shows how much work a variant
does, and how much it suffers when other processes compete for the two cores (PyTorch's
OpenMP threads spin, so its CPU time exceeds its wall time on a busy machine).

Usage: python bench/conv_ops.py [--rounds 5] [--steps 20] [--quick] [--no-torch]

On the project's 2-core machines (JAX 0.10.2, torch 2.13 CPU, quiet machine, load < 2.3)
two consecutive runs gave (c) 4399 and 4343 samples/s against PyTorch eager 3516 and
3512 (1.25×, 1.24×); (a) ~1160, (b) ~158. On a busy machine every number drops and
PyTorch's drops most.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.ops import conv2d, max_pool2d

BATCH = 128
DN = ("NHWC", "HWIO", "NHWC")

# ----------------------------------------------------------------------------- model


def lax_conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DN)


def lax_pool(x: jax.Array) -> jax.Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def ops_conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return conv2d(x, k, strides=1, padding="SAME")


def ops_pool(x: jax.Array) -> jax.Array:
    return max_pool2d(x, 2, 2, "valid")


def init_params(key: jax.Array) -> dict[str, jax.Array]:
    def glorot(k: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int) -> jax.Array:
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(k, shape, jnp.float32, -lim, lim)

    k = jax.random.split(key, 4)
    return {
        "c1": glorot(k[0], (3, 3, 1, 32), 9, 288),
        "b1": jnp.zeros(32),
        "c2": glorot(k[1], (3, 3, 32, 64), 288, 576),
        "b2": jnp.zeros(64),
        "d1": glorot(k[2], (7 * 7 * 64, 128), 3136, 128),
        "e1": jnp.zeros(128),
        "d2": glorot(k[3], (128, 10), 128, 10),
        "e2": jnp.zeros(10),
    }


def apply(params: dict[str, jax.Array], x: jax.Array, conv: Callable, pool: Callable):
    x = pool(jax.nn.relu(conv(x, params["c1"]) + params["b1"]))
    x = pool(jax.nn.relu(conv(x, params["c2"]) + params["b2"]))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["d1"] + params["e1"])
    return x @ params["d2"] + params["e2"]


OPTIMIZER = optax.adam(1e-3)


def make_step(conv: Callable, pool: Callable) -> Callable:
    def step(carry, batch):
        params, opt_state = carry
        x, y = batch

        def loss_fn(p):
            logits = apply(p, x, conv, pool)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


# ----------------------------------------------------------------------------- timing


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, process CPU s) per call of each case, run in turn every round."""
    for fn in cases.values():  # compile / warm up
        fn()
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    return {n: (statistics.median(walls[n]), statistics.median(cpus[n])) for n in cases}


def step_cases(steps: int, slow_steps: int, use_torch: bool) -> tuple[dict, dict[str, int]]:
    key = jax.random.key(0)
    xs = jax.random.normal(key, (steps, BATCH, 28, 28, 1), jnp.float32)
    ys = jax.random.randint(jax.random.key(1), (steps, BATCH), 0, 10)
    params = init_params(jax.random.key(2))
    carry = (params, OPTIMIZER.init(params))

    per_step = jax.jit(make_step(lax_conv, lax_pool))

    def run_per_step():
        c = carry
        for i in range(steps):
            c, _ = per_step(c, (xs[i], ys[i]))
        jax.block_until_ready(c)

    def scan_of(conv, pool, n):
        fn = jax.jit(lambda c, xs, ys: lax.scan(make_step(conv, pool), c, (xs, ys)))
        sx, sy = xs[:n], ys[:n]
        return lambda: jax.block_until_ready(fn(carry, sx, sy))

    cases: dict[str, Callable[[], Any]] = {
        "(a) lax ops, jit per step": run_per_step,
        "(b) lax ops in lax.scan": scan_of(lax_conv, lax_pool, slow_steps),
        "(c) core.ops in lax.scan": scan_of(ops_conv, ops_pool, steps),
    }
    samples = {
        "(a) lax ops, jit per step": steps * BATCH,
        "(b) lax ops in lax.scan": slow_steps * BATCH,
        "(c) core.ops in lax.scan": steps * BATCH,
    }
    if use_torch:
        cases["(d) PyTorch eager"] = torch_epoch(steps)
        samples["(d) PyTorch eager"] = steps * BATCH
    return cases, samples


def torch_epoch(steps: int) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 32, 3, padding=1)
            self.c2 = torch.nn.Conv2d(32, 64, 3, padding=1)
            self.d1 = torch.nn.Linear(7 * 7 * 64, 128)
            self.d2 = torch.nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(F.relu(self.c2(x)), 2)
            return self.d2(F.relu(self.d1(x.flatten(1))))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xs = torch.randn(steps, BATCH, 1, 28, 28)
    ys = torch.randint(0, 10, (steps, BATCH))

    def run() -> None:
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xs[i]), ys[i]).backward()
            opt.step()

    return run


def op_cases(reps_in_scan: int, use_torch: bool) -> dict[str, dict[str, Callable[[], Any]]]:
    """{op: {implementation: fn}} for conv2's forward, dX and dW."""
    k0, k1, k2 = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k0, (BATCH, 14, 14, 32), jnp.float32)
    w = jax.random.normal(k1, (3, 3, 32, 64), jnp.float32)
    g = jax.random.normal(k2, (BATCH, 14, 14, 64), jnp.float32)

    def ops(conv):
        return {
            "forward": lambda x, w, g: conv(x, w),
            "dX": lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
            "dW": lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
        }

    def in_scan(fn, n):
        # A scan of n calls; each call depends on the carry so nothing is hoisted.
        def run(x, w, g):
            def body(c, _):
                # The barrier keeps XLA from computing only the one element that is read.
                out = lax.optimization_barrier(fn(x + c, w, g + c))
                return c + 0.0 * out.reshape(-1)[0], None

            return lax.scan(body, jnp.float32(0), None, length=n)[0]

        jitted = jax.jit(run)
        return lambda: jax.block_until_ready(jitted(x, w, g))

    out: dict[str, dict[str, Callable[[], Any]]] = {"forward": {}, "dX": {}, "dW": {}}
    for label, conv in (("lax", lax_conv), ("core.ops", ops_conv)):
        for op, fn in ops(conv).items():
            jitted = jax.jit(fn)
            out[op][f"{label} jit"] = lambda j=jitted: jax.block_until_ready(j(x, w, g))
            out[op][f"{label} in scan"] = in_scan(fn, reps_in_scan)
    if use_torch:
        import torch
        import torch.nn.functional as F

        tx = torch.randn(BATCH, 32, 14, 14)
        tw = torch.randn(64, 32, 3, 3)
        tg = torch.randn(BATCH, 64, 14, 14)
        out["forward"]["torch"] = lambda: F.conv2d(tx, tw, padding=1)
        out["dX"]["torch"] = lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, padding=1)
        out["dW"]["torch"] = lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, padding=1)
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per call")
    parser.add_argument("--slow-steps", type=int, default=2, help="steps per call for (b)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 10 steps")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if present")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 3, 10
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch
        except ImportError:
            use_torch = False
    print(
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    if use_torch:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    else:
        print("torch not installed (or --no-torch): column (d) skipped")
    print(f"rounds={args.rounds} steps/call={args.steps} (b: {args.slow_steps}) batch={BATCH}")

    print(f"load average at start: {os.getloadavg()[0]:.2f}")

    cases, samples = step_cases(args.steps, args.slow_steps, use_torch)
    secs = interleaved(cases, args.rounds)
    c_name = "(c) core.ops in lax.scan"
    ref = samples[c_name] / secs[c_name][0]
    print("\nTraining step, benchmark CNN (median of interleaved rounds)")
    print(
        f"{'variant':30s} {'samples/s':>10s} {'ms/step':>8s} {'CPU ms/step':>12s} {'(c)/this':>9s}"
    )
    for name, (wall, cpu) in secs.items():
        steps = samples[name] / BATCH
        rate = samples[name] / wall
        print(
            f"{name:30s} {rate:10.0f} {1e3 * wall / steps:8.1f} {1e3 * cpu / steps:12.1f} "
            f"{ref / rate:8.2f}x"
        )

    reps = 4
    ops = op_cases(reps, use_torch)
    print(
        f"\nconv2 128×14×14×32 → 64, 3×3 SAME: wall ms per call (in scan: per iteration of {reps})"
    )
    columns = ["lax jit", "lax in scan", "core.ops jit", "core.ops in scan", "torch"]
    columns = [c for c in columns if c in ops["forward"]]
    print(f"{'op':8s} " + " ".join(f"{c:>16s}" for c in columns))
    for op, impls in ops.items():
        timings = interleaved(impls, args.rounds)
        cells = []
        for c in columns:
            per = timings[c][0] / (reps if c.endswith("in scan") else 1)
            cells.append(f"{1e3 * per:16.2f}")
        print(f"{op:8s} " + " ".join(cells))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} (2 cores; above ~2 means other work)")


if __name__ == "__main__":
    main()
