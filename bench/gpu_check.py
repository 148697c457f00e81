"""GPU check: the digits CNN (and a wide MLP) trained through the real service on a GPU.

Starts `backprop serve` (API + one worker; on a host where `nvidia-smi` lists a GPU the
worker consumes the `cpu` and `gpu` queues), then submits each model twice over HTTP, once
with `device: gpu` and once with `device: cpu`, waits for both and prints a table of what
each job's summary says: the device it trained on, samples/s (median of the epochs after
the first, which includes compiling) and the final validation accuracy.

    python bench/gpu_check.py [--epochs 20] [--mlp-examples 20000] [--timeout 240]
    python bench/gpu_check.py --split --devices auto,gpu,cpu
    python bench/gpu_check.py --devices gpu --parallel 1,2,4,8

`--parallel` trains each model data-parallel (`resources.devices`) over each number of
the worker's devices in turn; the table gains the scaling efficiency, samples/s over N
devices ÷ (N × samples/s on one). On a CPU host, `XLA_FLAGS=
--xla_force_host_platform_device_count=4` gives the worker 4 host devices: a check that
the jobs run and agree (their losses are printed), not a speed measurement (the host
devices share the same cores).

`--split` runs compose's processes instead (`backprop api`, `backprop worker --queues cpu`
and `backprop worker --queues gpu`, named `cpu` and `gpu`), so the table's `worker` column
shows where each job went: `auto` goes to the GPU worker while it is idle.

The wide MLP trains on a synthetic upload (784 features, 10 classes given by a random
linear map), large enough per step for a GPU to matter. A benchmark, not a test: CI has no
GPU. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.spec.examples import DIGITS_CNN  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")

WIDE_MLP: dict[str, Any] = {
    "name": "wide-mlp",
    "validation": {"split": 0.1},
    "model": {
        "layers": [
            {"type": "dense", "units": 1024, "activation": "relu"},
            {"type": "dense", "units": 1024, "activation": "relu"},
            {"type": "dense", "units": 10},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "training": {"epochs": 5, "batch_size": 256, "seed": 0},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BACKPROP = [sys.executable, "-c", "from app.cli import main; main()"]
SPLIT_KEY = "bp_gpu_check_key"


def spawn(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            BACKPROP + args, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=log.parent
        )


def start(work: Path, port: int, split: bool) -> list[subprocess.Popen[bytes]]:
    """`backprop serve`, or (`split`) compose's commands: `api`, a `cpu` and a `gpu` worker."""
    data = str(work / "data")
    if not split:
        return [spawn(["serve", "--data-dir", data, "--port", str(port)], work / "serve.log")]
    env = {"BACKPROP_DATA_DIR": data, "BACKPROP_BOOTSTRAP_API_KEY": SPLIT_KEY}
    migrate = spawn(["migrate"], work / "migrate.log", **env)
    if migrate.wait(120) != 0:
        raise RuntimeError((work / "migrate.log").read_text())
    return [
        spawn(["api", "--port", str(port)], work / "serve.log", **env),
        spawn(["worker", "--queues", "cpu"], work / "cpu.log", BACKPROP_WORKER_NAME="cpu", **env),
        spawn(["worker", "--queues", "gpu"], work / "gpu.log", BACKPROP_WORKER_NAME="gpu", **env),
    ]


def wait_for_workers(client: httpx.Client, names: tuple[str, ...]) -> None:
    """Until /metrics shows a heartbeat of each worker (`auto` routing counts only those)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if all(f'backprop_worker_busy{{worker="{name}"}} 0.0' in text for name in names):
            return
        time.sleep(0.5)
    raise RuntimeError(f"workers {names} not idle and registered in 120 s")


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"backprop serve exited:\n{log.read_text()[-4000:]}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"backprop serve not ready in 180 s:\n{log.read_text()[-4000:]}")


def synthetic_upload(client: httpx.Client, examples: int) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, 784)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(784, 10)).astype(np.float32), axis=1).astype(np.int32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    files = {"file": ("wide.npz", buffer.getvalue(), "application/octet-stream")}
    response = client.post("/v1/datasets", files=files, data={"task": "classification"})
    response.raise_for_status()
    return str(response.json()["id"])


def run_job(client: httpx.Client, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    response = client.post("/v1/jobs", json=spec)
    if response.status_code != 201:
        raise RuntimeError(f"submit failed: {response.status_code} {response.text}")
    job = response.json()
    while job["status"] not in TERMINAL:
        if time.monotonic() - started > timeout:
            client.post(f"/v1/jobs/{job['id']}/cancel")
            raise RuntimeError(f"job {spec['name']} not finished in {timeout:.0f} s: {job}")
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    job["wall_seconds"] = time.monotonic() - started
    return job


def devices_of(job: dict[str, Any]) -> int:
    return int(job["spec"].get("resources", {}).get("devices", 1))


def row(job: dict[str, Any], efficiency: float | None) -> str:
    summary = job.get("summary") or {}
    accuracy = summary.get("val_accuracy", summary.get("accuracy"))
    rate = summary.get("samples_per_second")
    devices = devices_of(job)
    if rate is None:
        return (
            f"| {job['name']} | {job['spec']['device']} | {devices} | {job['status']} | "
            f"{job.get('error')} |"
        )
    scaling = "" if efficiency is None else f"{efficiency:.0%}"
    loss = summary.get("loss")
    return (
        f"| {job['name']} | {job['spec']['device']} | {devices} | {job['status']} | "
        f"{job['worker']} | {summary.get('device', '?')} | {rate:,.0f} | {scaling} | "
        f"{loss if loss is None else f'{loss:.6g}'} | "
        f"{accuracy if accuracy is None else round(accuracy, 4)} | "
        f"{summary.get('epochs_completed')} | {job['wall_seconds']:.1f} |"
    )


def scaling_efficiency(jobs: list[dict[str, Any]]) -> dict[str, float]:
    """Per job name: samples/s ÷ (N × samples/s of the same model and device on 1 device)."""
    rate = {
        (job["model"], job["spec"]["device"], devices_of(job)): (job.get("summary") or {}).get(
            "samples_per_second"
        )
        for job in jobs
    }
    out = {}
    for job in jobs:
        n = devices_of(job)
        one = rate.get((job["model"], job["spec"]["device"], 1))
        mine = rate.get((job["model"], job["spec"]["device"], n))
        if one and mine:
            out[job["name"]] = mine / (n * one)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="digits CNN epochs (20)")
    parser.add_argument("--mlp-examples", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=240, help="per job, seconds")
    parser.add_argument("--devices", default="gpu,cpu", help="devices to ask for (gpu,cpu)")
    parser.add_argument(
        "--parallel",
        default="1",
        help="data-parallel device counts to train each job over (resources.devices): 1,2,4",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="compose's processes (api, a cpu and a gpu worker) instead of `backprop serve`",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    work = Path(tempfile.mkdtemp(prefix="backprop-gpu-check-"))
    log = work / "serve.log"
    port = free_port()
    started = start(work, port, args.split)
    server = started[0]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            wait_ready(client, server, log)
            if args.split:
                key = SPLIT_KEY
                wait_for_workers(client, ("cpu", "gpu"))
            else:
                key = (work / "data" / "api_key").read_text().strip()
            client.headers["Authorization"] = f"Bearer {key}"
            cnn = copy.deepcopy(DIGITS_CNN)
            cnn["training"]["epochs"] = args.epochs
            cnn["training"].pop("early_stopping", None)  # same number of epochs on both
            mlp = {
                **copy.deepcopy(WIDE_MLP),
                "dataset": synthetic_upload(client, args.mlp_examples),
            }
            jobs = []
            counts = [int(n) for n in args.parallel.split(",")]
            for spec in (cnn, mlp):
                for device in args.devices.split(","):
                    for n in counts:
                        submitted = {**copy.deepcopy(spec), "device": device}
                        submitted["resources"] = {"devices": n}
                        suffix = "" if counts == [1] else f"-x{n}"
                        submitted["name"] = f"{spec['name']}-{device}{suffix}"
                        jobs.append(run_job(client, submitted, args.timeout))
                        jobs[-1]["model"] = spec["name"]
                        shown = ("name", "status", "summary", "error")
                        print(json.dumps({k: jobs[-1][k] for k in shown}), flush=True)
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    print()
    print(
        "| job | device asked | devices | status | worker | trained on | samples/s | scaling "
        "| loss | val accuracy | epochs | wall s |"
    )
    print("|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    efficiency = scaling_efficiency(jobs)
    for job in jobs:
        print(row(job, efficiency.get(job["name"]) if devices_of(job) > 1 else None))
    by_name = {job["name"]: job for job in jobs if devices_of(job) == 1}
    one = "" if counts == [1] else "-x1"
    for model in (cnn["name"], mlp["name"]):
        gpu = (by_name.get(f"{model}-gpu{one}", {}).get("summary") or {}).get("samples_per_second")
        cpu = (by_name.get(f"{model}-cpu{one}", {}).get("summary") or {}).get("samples_per_second")
        if gpu and cpu:
            print(f"{model}: GPU/CPU samples/s = {gpu / cpu:.2f}x")
    print(f"\nserve log: {log}")
    return 0 if all(job["status"] == "succeeded" for job in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
