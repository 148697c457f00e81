"""Small-job latency through `backprop serve`: POST → `succeeded`, and where the time went.

Starts `backprop serve` in a fresh data directory (so the first job compiles cold), with
warm spares (`BACKPROP_WARM_SPARES=1`, the default) and then without (`=0`). For each,
over HTTP: per job the wall time from the POST to the terminal status seen on the job's
event stream (SSE, no polling), and the phases of its `timings`:

- cold: the first job of each kind after the server started;
- warm: the median of `--repeats` repeats of the same spec;
- sweep: 10 different learning rates of the iris MLP in a row (a sweep's pattern).

Jobs: the iris MLP (60 epochs), API.md's digits CNN, an XOR 2-2-1 (1,000 full-batch
epochs). In the same run, a bare `python -c "import jax; jax.numpy.zeros(1)"` is timed
as the yardstick.

    python bench/job_latency.py [--repeats 10] [--modes 1,0]

A benchmark, not a test: numbers are noisy on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_check import TERMINAL, free_port, spawn, wait_ready  # noqa: E402
from core.spec.examples import DIGITS_CNN  # noqa: E402

PHASES = ("queued", "startup", "compile", "training", "finalizing", "total")

IRIS_MLP: dict[str, Any] = {
    "name": "iris-mlp",
    "dataset": "builtin:iris",
    "model": {
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dense", "units": 3},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.01},
    "validation": {"split": 0.2},
    "training": {"epochs": 60, "batch_size": 16, "seed": 0},
}
XOR: dict[str, Any] = {
    "name": "xor-2-2-1",
    "dataset": "builtin:xor",
    "model": {
        "layers": [
            {"type": "dense", "units": 2, "activation": "sigmoid"},
            {"type": "dense", "units": 1, "activation": "sigmoid"},
        ]
    },
    "loss": "sse",
    "optimizer": {"type": "sgd", "learning_rate": 0.5, "momentum": 0.9},
    "training": {"epochs": 1000, "batch_size": "full", "seed": 1},
}
CNN: dict[str, Any] = {**copy.deepcopy(DIGITS_CNN), "name": "digits-cnn"}


def run_job(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit `spec`, follow its event stream to the end; the final body plus `wall`."""
    started = time.perf_counter()
    response = client.post("/v1/jobs", json=spec)
    response.raise_for_status()
    job = response.json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=300) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "status":
                body = json.loads(line.split(":", 1)[1])
                if body["status"] in TERMINAL:
                    job = body
                    break
    job["wall"] = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"{spec['name']}: {job['status']} {job.get('error')}")
    # The terminal event can precede the finalizing write's last fields by nothing: re-read.
    job.update(client.get(f"/v1/jobs/{job['id']}").json(), wall=job["wall"])
    return job


def median_row(jobs: list[dict[str, Any]]) -> dict[str, float]:
    out = {"wall": statistics.median(j["wall"] for j in jobs)}
    for phase in PHASES:
        values = [j["timings"][phase] for j in jobs if j["timings"][phase] is not None]
        out[phase] = statistics.median(values) if values else float("nan")
    return out


def serve_and_measure(spares: int, repeats: int) -> list[tuple[str, dict[str, float]]]:
    work = Path(tempfile.mkdtemp(prefix="backprop-latency-"))
    port = free_port()
    log = work / "serve.log"
    server = spawn(
        ["serve", "--data-dir", str(work / "data"), "--port", str(port)],
        log,
        BACKPROP_WARM_SPARES=str(spares),
    )
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, server, log)
            client.headers["Authorization"] = "Bearer " + (
                (work / "data" / "api_key").read_text().strip()
            )
            time.sleep(10)  # the worker's slot has started (and its spare got ready)
            for spec in (IRIS_MLP, XOR, CNN):
                rows.append((f"{spec['name']} cold", median_row([run_job(client, spec)])))
                warm = [run_job(client, spec) for _ in range(repeats)]
                rows.append((f"{spec['name']} warm", median_row(warm)))
            sweep = []
            for i in range(10):
                spec = copy.deepcopy(IRIS_MLP)
                spec["optimizer"]["learning_rate"] = 0.001 * (i + 1)
                sweep.append(run_job(client, spec))
            rows.append(("iris-mlp sweep of 10 lrs", median_row(sweep)))
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    return rows


def bare_jax_startup(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
            check=True,
            env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--modes", default="1,0", help="BACKPROP_WARM_SPARES values to run")
    args = parser.parse_args()
    yardstick = bare_jax_startup()
    print(f"bare `import jax; jax.numpy.zeros(1)` start-up: {yardstick:.2f} s (median of 5)")
    header = f"{'spares':>6} {'job':<26} {'wall':>6} {'/jax':>5} " + " ".join(
        f"{p:>10}" for p in PHASES
    )
    print(header)
    print("-" * len(header))
    for mode in (int(m) for m in args.modes.split(",")):
        for name, row in serve_and_measure(mode, args.repeats):
            phases = " ".join(f"{row[p]:>10.3f}" for p in PHASES)
            print(
                f"{mode:>6} {name:<26} {row['wall']:>6.2f} {row['wall'] / yardstick:>5.2f} "
                f"{phases}",
                flush=True,
            )


if __name__ == "__main__":
    main()
