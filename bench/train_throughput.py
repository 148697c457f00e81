"""Training throughput: this engine vs a bare hand-written JAX loop vs PyTorch eager.

Prints samples/s side by side, measured in one run on the same data and batch size, for
the three models of the core-engine issue. A benchmark, not a test: numbers are noisy on a
shared 2-core machine, so compare the ratios within one run.

    python bench/train_throughput.py [--seconds 8] [--only digits_mlp,wide_mlp,cnn]

PyTorch is optional (`pip install torch`); without it that column is empty.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from core.data import Dataset, DatasetInfo, load_builtin
from core.spec import parse_spec
from core.train import Callbacks, train


@dataclass(frozen=True)
class Case:
    name: str
    layers: list[dict[str, Any]]
    batch_size: int
    data: Callable[[], Dataset]


def _synthetic(n: int, shape: tuple[int, ...], classes: int = 10) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    info = DatasetInfo(
        "synthetic",
        "npz",
        "classification",
        n,
        shape,
        (),
        classes,
        [str(i) for i in range(classes)],
    )
    return Dataset(x, y, info)


def _digits_flat() -> Dataset:
    digits = load_builtin("digits")
    info = DatasetInfo(**{**digits.info.__dict__, "input_shape": (64,)})
    return Dataset(np.asarray(digits.x).reshape(len(digits.x), 64), np.asarray(digits.y), info)


CASES = [
    Case(
        "digits_mlp",
        [
            {"type": "dense", "units": 256, "activation": "relu"},
            {"type": "dense", "units": 256, "activation": "relu"},
            {"type": "dense", "units": 10},
        ],
        64,
        _digits_flat,
    ),
    Case(
        "wide_mlp",
        [
            {"type": "dense", "units": 1024, "activation": "relu"},
            {"type": "dense", "units": 1024, "activation": "relu"},
            {"type": "dense", "units": 10},
        ],
        256,
        lambda: _synthetic(16384, (784,)),
    ),
    Case(
        "cnn",
        [
            {"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "conv2d", "filters": 64, "kernel_size": 3, "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dense", "units": 10},
        ],
        128,
        lambda: _synthetic(4096, (28, 28, 1)),
    ),
]


def engine(case: Case, data: Dataset, seconds: float) -> float:
    """Median per-epoch samples/s of the engine, after the first (compiling) epoch."""
    spec = parse_spec(
        {
            "dataset": "bench",
            "model": {"layers": case.layers},
            "loss": "cross_entropy",
            "optimizer": {"type": "adam", "learning_rate": 1e-3},
            "training": {"epochs": 100_000, "batch_size": case.batch_size, "seed": 0},
        }
    )
    timer = _EpochTimer(seconds)
    train(spec, data, callbacks=timer)
    return statistics.median(timer.rates[1:])


class _EpochTimer(Callbacks):
    def __init__(self, seconds: float):
        self.rates: list[float] = []
        self.started = time.monotonic()
        self.seconds = seconds

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.rates.append(metrics["samples_per_second"])
        if len(self.rates) == 1:
            self.started = time.monotonic()  # the clock starts after compilation

    def should_stop(self) -> bool:
        return len(self.rates) >= 3 and time.monotonic() - self.started > self.seconds


def _bare_params(
    case: Case, input_shape: tuple[int, ...], key: jax.Array
) -> list[dict[str, jax.Array]]:
    params = []
    shape = input_shape
    for layer in case.layers:
        key, sub = jax.random.split(key)
        if layer["type"] == "dense":
            fan_in = int(np.prod(shape))
            params.append(
                {
                    "w": jax.random.normal(sub, (fan_in, layer["units"])) * (2 / fan_in) ** 0.5,
                    "b": jnp.zeros(layer["units"]),
                }
            )
            shape = (layer["units"],)
        elif layer["type"] == "conv2d":
            cin = shape[-1]
            params.append(
                {
                    "w": jax.random.normal(sub, (3, 3, cin, layer["filters"]))
                    * (2 / (9 * cin)) ** 0.5,
                    "b": jnp.zeros(layer["filters"]),
                }
            )
            shape = (*shape[:2], layer["filters"])
        elif layer["type"] == "max_pool2d":
            params.append({})
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        else:
            params.append({})
            shape = (int(np.prod(shape)),)
    return params


def _bare_forward(case: Case, params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer, p in zip(case.layers, params, strict=True):
        kind = layer["type"]
        if kind == "dense":
            x = x.reshape(x.shape[0], -1) @ p["w"] + p["b"]
        elif kind == "conv2d":
            x = (
                jax.lax.conv_general_dilated(
                    x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
                + p["b"]
            )
        elif kind == "max_pool2d":
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        if layer.get("activation") == "relu":
            x = jax.nn.relu(x)
    return x


def bare_jax(case: Case, data: Dataset, seconds: float) -> float:
    """A hand-written jitted epoch: lax.scan over shuffled batches, data on the device."""
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    params = _bare_params(case, tuple(data.info.input_shape), jax.random.PRNGKey(0))
    tx = optax.adam(1e-3)
    steps = len(data.x) // case.batch_size

    def loss(p: Any, xb: jax.Array, yb: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(
            _bare_forward(case, p, xb), yb
        ).mean()

    @jax.jit
    def epoch(p: Any, opt: Any, key: jax.Array) -> tuple[Any, Any]:
        order = jax.random.permutation(key, len(data.x))[: steps * case.batch_size]

        def step(carry: Any, idx: jax.Array) -> tuple[Any, jax.Array]:
            p, opt = carry
            value, grads = jax.value_and_grad(loss)(p, x[idx], y[idx])
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), value

        (p, opt), _losses = jax.lax.scan(step, (p, opt), order.reshape(steps, case.batch_size))
        return p, opt

    opt = tx.init(params)
    params, opt = jax.block_until_ready(epoch(params, opt, jax.random.PRNGKey(0)))  # compile
    return _repeat(
        lambda i: jax.block_until_ready(epoch(params, opt, jax.random.PRNGKey(i))),
        steps * case.batch_size,
        seconds,
    )


def pytorch(case: Case, data: Dataset, seconds: float) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    modules: list[Any] = []
    shape = tuple(data.info.input_shape)
    for layer in case.layers:
        if layer["type"] == "dense":
            modules.append(torch.nn.Linear(int(np.prod(shape)), layer["units"]))
            shape = (layer["units"],)
        elif layer["type"] == "conv2d":
            modules.append(torch.nn.Conv2d(shape[-1], layer["filters"], 3, padding=1))
            shape = (*shape[:2], layer["filters"])
        elif layer["type"] == "max_pool2d":
            modules.append(torch.nn.MaxPool2d(2))
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        elif layer["type"] == "flatten":
            modules.append(torch.nn.Flatten())
        if layer.get("activation") == "relu":
            modules.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*modules)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.from_numpy(np.array(data.x))  # a writable copy, as torch wants
    if x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous()  # NCHW, PyTorch's native conv layout
    y = torch.from_numpy(np.asarray(data.y)).long()
    steps = len(x) // case.batch_size

    def epoch(seed: int) -> None:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for s in range(steps):
            idx = order[s * case.batch_size : (s + 1) * case.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            optimizer.step()

    epoch(0)  # warm-up
    return _repeat(epoch, steps * case.batch_size, seconds)


def _repeat(run_epoch: Callable[[int], Any], samples: int, seconds: float) -> float:
    rates = []
    started = time.monotonic()
    i = 1
    while len(rates) < 3 or time.monotonic() - started < seconds:
        t = time.perf_counter()
        run_epoch(i)
        rates.append(samples / (time.perf_counter() - t))
        i += 1
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per cell")
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; samples/s, median over epochs")
    columns = ("engine", "bare JAX", "PyTorch")
    header = f"{'model':<12} " + " ".join(f"{c:>10}" for c in columns) + " eng/bare eng/torch"
    print(header)
    print("-" * len(header))
    for case in CASES:
        if wanted and case.name not in wanted:
            continue
        data = case.data()
        ours = engine(case, data, args.seconds)
        bare = bare_jax(case, data, args.seconds)
        torch_rate = pytorch(case, data, args.seconds)
        torch_cell = f"{torch_rate:>10.0f}" if torch_rate else f"{'-':>10}"
        vs_torch = f"{ours / torch_rate:>9.2f}" if torch_rate else f"{'-':>9}"
        print(
            f"{case.name:<12} {ours:>10.0f} {bare:>10.0f} {torch_cell} "
            f"{ours / bare:>8.2f} {vs_torch}",
            flush=True,
        )


if __name__ == "__main__":
    main()
