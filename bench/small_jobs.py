"""Small full-batch jobs: the 1986 backpropagation problems, engine vs bare JAX vs PyTorch.

Rumelhart, Hinton & Williams trained a handful of patterns by full-batch gradient descent
with momentum for thousands of sweeps. Each problem here runs a fixed number of sweeps
three ways, in one run: (a) `core.train.train` from a JobSpec, (b) one bare jitted
`lax.scan` over all sweeps, (c) PyTorch eager on one thread. Then the digits MLP
64-256-256-10 (batch 64, Adam), engine vs bare scan, where an epoch is 26 steps.

    python bench/small_jobs.py [--sweeps 2000] [--repeats 5]

Columns, in seconds per 1,000 sweeps (medians over repeats):
- `engine call`: the whole `train()` call, after a first call warmed the compilation
  cache (so it includes tracing, a cache hit, dataset upload and bookkeeping);
- `engine run`: the time inside its dispatches (the sum of the epochs' `epoch_seconds`);
- `bare scan`: the jitted scan alone, after its compilation;
- `PyTorch`: eager, `torch.set_num_threads(1)`; empty without torch (`pip install torch`).
A benchmark, not a test: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from core.data import Dataset, load_builtin
from core.runtime import enable_compilation_cache
from core.spec import parse_spec
from core.train import train

UNIFORM = {"type": "uniform", "low": -0.3, "high": 0.3}  # the paper's initial weights


@dataclass(frozen=True)
class Problem:
    name: str
    dataset: str
    hidden: int
    learning_rate: float  # ε; momentum α = 0.9 throughout


PROBLEMS = [
    Problem("xor 2-2-1", "xor", 2, 0.5),
    Problem("symmetry 6-2-1", "symmetry", 2, 0.1),
    Problem("parity 4-4-1", "parity", 4, 0.5),
    Problem("encoder 8-3-8", "encoder", 3, 0.5),
]


def targets(data: Dataset) -> np.ndarray:
    """What the single sigmoid output (or the encoder's 8) is trained towards."""
    y = np.asarray(data.y, np.float32)
    return y if y.ndim == 2 else y[:, None]


def engine_spec(problem: Problem, data: Dataset, sweeps: int) -> dict[str, Any]:
    outputs = targets(data).shape[1]
    layers = [
        {"type": "dense", "units": units, "activation": "sigmoid"}
        for units in (problem.hidden, outputs)
    ]
    for layer in layers:
        layer.update(kernel_init=UNIFORM, bias_init=UNIFORM)
    return {
        "dataset": f"builtin:{problem.dataset}",
        "model": {"layers": layers},
        "loss": "sse",
        "optimizer": {"type": "sgd", "learning_rate": problem.learning_rate, "momentum": 0.9},
        "training": {"epochs": sweeps, "batch_size": "full", "shuffle": False, "seed": 0},
    }


def time_engine(spec: dict[str, Any], data: Dataset, repeats: int) -> tuple[float, float]:
    """(median seconds of a whole `train()` call, median seconds inside its dispatches)."""
    parsed = parse_spec(spec)
    train(parsed, data)  # compiles and fills the compilation cache
    calls, runs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = train(parsed, data)
        calls.append(time.perf_counter() - started)
        runs.append(sum(row["epoch_seconds"] for row in result.history))
    return statistics.median(calls), statistics.median(runs)


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # compile / warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bare_scan(problem: Problem, data: Dataset, sweeps: int, repeats: int) -> float:
    """All sweeps in one jitted lax.scan: sigmoid MLP, summed squared error, SGD momentum."""
    x, y = jnp.asarray(data.x, jnp.float32), jnp.asarray(targets(data))
    sizes = (x.shape[1], problem.hidden, y.shape[1])
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = [
        (
            jax.random.uniform(keys[2 * i], (n_in, n_out), minval=-0.3, maxval=0.3),
            jax.random.uniform(keys[2 * i + 1], (n_out,), minval=-0.3, maxval=0.3),
        )
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
    ]
    tx = optax.sgd(problem.learning_rate, momentum=0.9)

    def loss(p: Any) -> jax.Array:
        h = x
        for w, b in p:
            h = jax.nn.sigmoid(h @ w + b)
        return 0.5 * jnp.sum((h - y) ** 2)

    @jax.jit
    def run(p: Any) -> Any:
        def sweep(carry: Any, _: None) -> tuple[Any, jax.Array]:
            p, opt = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), value

        return jax.lax.scan(sweep, (p, tx.init(p)), None, length=sweeps)

    return median_seconds(lambda: jax.block_until_ready(run(params)), repeats)


def pytorch(problem: Problem, data: Dataset, sweeps: int, repeats: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    x = torch.from_numpy(np.array(data.x, np.float32))
    y = torch.from_numpy(targets(data).copy())

    def run() -> None:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], problem.hidden),
            torch.nn.Sigmoid(),
            torch.nn.Linear(problem.hidden, y.shape[1]),
            torch.nn.Sigmoid(),
        )
        for parameter in net.parameters():
            torch.nn.init.uniform_(parameter, -0.3, 0.3)
        optimizer = torch.optim.SGD(net.parameters(), lr=problem.learning_rate, momentum=0.9)
        for _ in range(sweeps):
            optimizer.zero_grad(set_to_none=True)
            loss = 0.5 * ((net(x) - y) ** 2).sum()
            loss.backward()
            optimizer.step()

    return median_seconds(run, repeats)


def digits_mlp(epochs: int, repeats: int) -> tuple[float, float, float]:
    """The digits MLP 64-256-256-10, batch 64, Adam 1e-3, shuffled: (engine call, engine
    run, bare scan) seconds for `epochs` epochs, on the whole set (no validation)."""
    digits = load_builtin("digits")
    x = np.asarray(digits.x, np.float32).reshape(len(digits.x), -1)
    data = Dataset(x, np.asarray(digits.y), replace(digits.info, input_shape=(64,)))
    spec = {
        "dataset": "builtin:digits",
        "model": {
            "layers": [
                {"type": "dense", "units": 256, "activation": "relu"},
                {"type": "dense", "units": 256, "activation": "relu"},
                {"type": "dense", "units": 10},
            ]
        },
        "loss": "cross_entropy",
        "optimizer": {"type": "adam", "learning_rate": 1e-3},
        "training": {"epochs": epochs, "batch_size": 64, "seed": 0},
    }
    call, run = time_engine(spec, data, repeats)

    xs, ys = jnp.asarray(x), jnp.asarray(digits.y)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    sizes = (64, 256, 256, 10)
    params = [
        (jax.random.normal(k, (a, b)) * (2 / a) ** 0.5, jnp.zeros(b))
        for k, (a, b) in zip(keys, itertools.pairwise(sizes), strict=True)
    ]
    tx = optax.adam(1e-3)
    batch = 64
    steps = -(-len(x) // batch)

    def loss(p: Any, xb: jax.Array, yb: jax.Array, wb: jax.Array) -> jax.Array:
        h = xb
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            h = jax.nn.relu(h) if i < len(p) - 1 else h
        per = optax.softmax_cross_entropy_with_integer_labels(h, yb)
        return jnp.sum(per * wb) / jnp.sum(wb)

    @jax.jit
    def run_all(p: Any) -> Any:
        def epoch(carry: Any, key: jax.Array) -> tuple[Any, None]:
            # Padded to whole batches with zero weights, as the engine does.
            order = jnp.concatenate(
                [jax.random.permutation(key, len(x)), jnp.zeros(steps * batch - len(x), int)]
            )
            weight = (jnp.arange(steps * batch) < len(x)).astype(jnp.float32)

            def step(carry: Any, i: jax.Array) -> tuple[Any, jax.Array]:
                p, opt = carry
                idx = jax.lax.dynamic_slice(order, (i * batch,), (batch,))
                wb = jax.lax.dynamic_slice(weight, (i * batch,), (batch,))
                value, grads = jax.value_and_grad(loss)(p, xs[idx], ys[idx], wb)
                updates, opt = tx.update(grads, opt, p)
                return (optax.apply_updates(p, updates), opt), value

            carry, _ = jax.lax.scan(step, carry, jnp.arange(steps))
            return carry, None

        keys = jax.random.split(jax.random.PRNGKey(1), epochs)
        return jax.lax.scan(epoch, (p, tx.init(p)), keys)

    bare = median_seconds(lambda: jax.block_until_ready(run_all(params)), repeats)
    return call, run, bare


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweeps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--digits-epochs", type=int, default=50)
    args = parser.parse_args()
    enable_compilation_cache(tempfile.mkdtemp(prefix="bench-xla-"))
    per_k = 1000 / args.sweeps
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.sweeps} sweeps; "
        f"seconds per 1,000 sweeps (medians of {args.repeats})"
    )
    header = (
        f"{'problem':<16} {'engine call':>11} {'engine run':>10} {'bare scan':>10} "
        f"{'PyTorch':>9} {'call/bare':>9} {'run/bare':>9} {'torch/run':>9} {'torch/call':>10}"
    )
    print(header)
    print("-" * len(header))
    for problem in PROBLEMS:
        data = load_builtin(problem.dataset)
        call, run = time_engine(engine_spec(problem, data, args.sweeps), data, args.repeats)
        bare = bare_scan(problem, data, args.sweeps, args.repeats)
        torch_s = pytorch(problem, data, args.sweeps, args.repeats)
        torch_cells = (
            (f"{torch_s * per_k:>9.4f}", f"{torch_s / run:>9.1f}", f"{torch_s / call:>10.1f}")
            if torch_s
            else (f"{'-':>9}", f"{'-':>9}", f"{'-':>10}")
        )
        print(
            f"{problem.name:<16} {call * per_k:>11.4f} {run * per_k:>10.4f} "
            f"{bare * per_k:>10.4f} {torch_cells[0]} {call / bare:>9.1f} {run / bare:>9.1f} "
            f"{torch_cells[1]} {torch_cells[2]}",
            flush=True,
        )
    epochs = args.digits_epochs
    call, run, bare = digits_mlp(epochs, args.repeats)
    print(
        f"\ndigits MLP 64-256-256-10, batch 64, {epochs} epochs: engine call {call:.3f} s, "
        f"engine run {run:.3f} s, bare scan {bare:.3f} s; bare/run {bare / run:.2f}, "
        f"bare/call {bare / call:.2f}"
    )


if __name__ == "__main__":
    main()
