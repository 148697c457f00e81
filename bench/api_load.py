"""API load: the server deployment (PostgreSQL, Redis, `backprop api`, one worker) under load.

Starts a fresh PostgreSQL and Redis (the integration tests' helpers, `tests/servers.py`),
runs `backprop migrate`, starts `backprop api` (one uvicorn process) and one
`backprop worker --queues cpu --concurrency 1`, then measures from the same machine:

1. submit-to-running: with the worker idle, submit a small job and poll `GET /v1/jobs/{id}`
   every 5 ms until it is `running`; cancel it, wait until the worker's slot is idle and
   `--settle` seconds more, repeat. Then a few jobs back to back (0.3 s after the slot went
   idle, while the slot's next warm spare may still be starting).
   The worker is then stopped, so that the loads below run with no worker.
2. `GET /v1/jobs/{id}` of an existing (finished) job at a few concurrency levels.
3. `POST /v1/jobs` (builtin:iris, two dense layers) at the same levels; the jobs stay queued.
4. `GET /v1/jobs/{id}` of a queued job once the POST load has queued many.

Each load is keep-alive HTTP/1.1, bounded in time and in count, repeated `--repeats` times;
the table gives the median over the repeats of req/s and of each run's p50 and p99. The
load comes from `wrk` when it is on PATH (one thread), else from httpx in a thread pool
(`--client python`; it takes CPU from the server on a small machine, so expect less).

    python bench/api_load.py [--seconds 3] [--repeats 3] [--concurrency 1,8,32] [--runs 10]

A benchmark, not a test: the numbers are noisy on a shared 2-core machine (the load
generator, PostgreSQL and the API share the cores). Every process it starts is stopped at
the end, on an error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests` is not installed: reuse its server helpers from here

import pytest  # noqa: E402  (tests/servers.py reports a missing server through pytest)
from sqlalchemy import create_engine, select  # noqa: E402

from app.domain.db.models import Worker  # noqa: E402
from tests.integration.processes import (  # noqa: E402
    ManagedProcess,
    backprop_command,
    clean_environment,
)
from tests.servers import PostgresServer, RedisServer, free_port, wait_until  # noqa: E402

API_KEY = "bp_bench_api_load_key"
WORKER_NAME = "bench-worker"
START_SECONDS = 120
TERMINAL = ("succeeded", "failed", "cancelled")
# Targets of the API load issue, for a 2-core machine.
GET_RPS_TARGET = 1000
GET_P99_TARGET_MS = 50
SUBMIT_TO_RUNNING_TARGET_MS = 200

IRIS_SPEC: dict[str, Any] = {
    "name": "bench-iris",
    "dataset": "builtin:iris",
    "validation": {"split": 0.2},
    "model": {
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dense", "units": 3},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.01},
    "training": {"epochs": 60, "batch_size": 16, "seed": 0},
    "device": "cpu",
}

# One wrk thread per run. `init` takes the request cap of the thread, `response` stops the
# thread at it, so a run ends at `-d` seconds or at the cap, whichever comes first.
WRK_SCRIPT = """
local limit = 0
local done = 0
function init(args)
  limit = tonumber(args[1])
  wrk.method = args[2]
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  if args[4] ~= nil then
    local file = io.open(args[4], "rb")
    wrk.body = file:read("*a")
    file:close()
    wrk.headers["Content-Type"] = "application/json"
  end
end
function response(status, headers, body)
  done = done + 1
  if done >= limit then
    wrk.thread:stop()
  end
end
"""


# -- the deployment ---------------------------------------------------------------------


@dataclass
class Deployment:
    base_url: str
    database_url: str
    api: ManagedProcess
    worker: ManagedProcess


@contextmanager
def deployment(work: Path, api_workers: int = 1) -> Iterator[Deployment]:
    """PostgreSQL, Redis, migrations, `backprop api` and one worker; all stopped on exit."""
    started: list[ManagedProcess] = []
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    logs = work / "logs"
    logs.mkdir()
    try:
        postgres = PostgresServer.start()
        redis = RedisServer.start(work)
        database_url = postgres.create_database()
        env = clean_environment(
            BACKPROP_DATABASE_URL=database_url,
            BACKPROP_BROKER_URL=redis.new_broker_url(),
            BACKPROP_DATA_DIR=str(work / "data"),
            BACKPROP_BOOTSTRAP_API_KEY=API_KEY,
            BACKPROP_WORKER_NAME=WORKER_NAME,
        )
        migrate = subprocess.run(
            backprop_command("migrate"), env=env, cwd=work, capture_output=True, text=True
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"backprop migrate failed:\n{migrate.stderr}")
        port = free_port()

        def start(name: str, *args: str) -> ManagedProcess:
            process = ManagedProcess(name, backprop_command(*args), env=env, cwd=work, log_dir=logs)
            started.append(process)
            return process

        api = start(
            "api", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(api_workers)
        )
        worker = start("worker", "worker", "--queues", "cpu", "--concurrency", "1")
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(base_url), START_SECONDS, what="/readyz", watch=[api])
        yield Deployment(base_url, database_url, api, worker)
    except Exception:
        for process in started:
            print(f"--- log of {process.name} ---\n{process.log_tail(3000)}", file=sys.stderr)
        raise
    finally:
        for process in reversed(started):
            with suppress(Exception):
                process.stop()
        if redis is not None:
            with suppress(Exception):
                redis.stop()
        if postgres is not None:
            with suppress(Exception):
                postgres.stop()


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_for_idle_worker(dep: Deployment, timeout: float = START_SECONDS) -> None:
    """Until Celery says `ready` and the worker's slot row is idle."""
    engine = create_engine(dep.database_url)

    def idle() -> bool:
        if " ready." not in dep.worker.log_tail(100_000):
            return False
        with engine.connect() as connection:
            rows = connection.execute(
                select(Worker.running_job_id).where(Worker.name == WORKER_NAME)
            ).all()
        return bool(rows) and all(row.running_job_id is None for row in rows)

    try:
        wait_until(idle, timeout, what="an idle worker", interval=0.05, watch=[dep.worker])
    finally:
        engine.dispose()


# -- load generators --------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    errors: int  # transport errors and unexpected statuses
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Load:
    method: str
    url: str
    body: dict[str, Any] | None
    expect: int


LoadRunner = Callable[[Load, int, float, int], Run]


def wrk_runner(work: Path) -> LoadRunner:
    wrk = shutil.which("wrk")
    assert wrk is not None
    script = work / "load.lua"
    script.write_text(WRK_SCRIPT)

    def run(load: Load, concurrency: int, seconds: float, max_requests: int) -> Run:
        args = [str(max_requests), load.method, API_KEY]
        if load.body is not None:
            body_file = work / "body.json"
            body_file.write_text(json.dumps(load.body))
            args.append(str(body_file))
        argv = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s"]
        argv += ["--latency", "-s", str(script), load.url, "--", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return _parse_wrk(done.stdout)

    return run


def _parse_wrk(out: str) -> Run:
    """wrk counts 2xx and 3xx alike as successes (a POST answering 200 would be one)."""

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else 0.0

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no {percent}% latency in wrk's output:\n{out}")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]
        return float(found.group(1)) * scale

    requests = int(number(r"(\d+) requests in"))
    rps = number(r"Requests/sec:\s+([\d.]+)")
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(number(r"Non-2xx or 3xx responses: (\d+)"))
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Run(requests, errors, requests / rps if rps else 0.0, latency("50"), latency("99"))


def python_runner(api_key: str) -> LoadRunner:
    """httpx clients in threads: one keep-alive connection per simulated user."""

    def run(load: Load, concurrency: int, seconds: float, max_requests: int) -> Run:
        headers = {"Authorization": f"Bearer {api_key}"}
        content = json.dumps(load.body).encode() if load.body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        lock = threading.Lock()
        issued = 0
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        errors = [0] * concurrency
        start = time.perf_counter()
        deadline = start + seconds

        def user(index: int) -> None:
            nonlocal issued
            with httpx.Client(headers=headers, timeout=10) as client:
                while time.perf_counter() < deadline:
                    with lock:
                        if issued >= max_requests:
                            return
                        issued += 1
                    sent = time.perf_counter()
                    try:
                        status = client.request(load.method, load.url, content=content).status_code
                    except httpx.TransportError:
                        status = 0
                    latencies[index].append(time.perf_counter() - sent)
                    if status != load.expect:
                        errors[index] += 1

        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(user, i) for i in range(concurrency)]:
                future.result()
        elapsed = time.perf_counter() - start
        merged = sorted(x for per_user in latencies for x in per_user)
        return Run(len(merged), sum(errors), elapsed, *_percentiles_ms(merged))

    return run


def _percentiles_ms(sorted_seconds: list[float]) -> tuple[float, float]:
    if not sorted_seconds:
        return 0.0, 0.0

    def at(q: float) -> float:
        return sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))] * 1e3

    return at(0.50), at(0.99)


# -- measurements -----------------------------------------------------------------------


@dataclass
class Row:
    name: str
    concurrency: int
    runs: list[Run]

    def median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(value(run) for run in self.runs)


def measure(
    runner: LoadRunner,
    name: str,
    load: Load,
    levels: list[int],
    args: argparse.Namespace,
) -> list[Row]:
    rows = []
    for concurrency in levels:
        runs = [
            runner(load, concurrency, args.seconds, args.max_requests) for _ in range(args.repeats)
        ]
        row = Row(name, concurrency, runs)
        print(
            f"  {name} c={concurrency}: {row.median(lambda r: r.rps):,.0f} req/s, "
            f"p50 {row.median(lambda r: r.p50_ms):.1f} ms, "
            f"p99 {row.median(lambda r: r.p99_ms):.1f} ms",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


@dataclass
class SubmitToRunning:
    settle: float  # seconds waited after the previous job's slot went idle
    client_ms: list[float]  # POST sent → first poll that sees `running`
    server_ms: list[float]  # the job body's started_at − created_at
    post_ms: list[float]  # POST sent → its response
    cold_ms: float | None = None  # an unmeasured first job (the API's first POST is cold)


def submit_to_running(
    dep: Deployment, runs: int, settle: float, warm_up: bool
) -> tuple[SubmitToRunning, str]:
    """`runs` jobs one after the other (plus an unmeasured first one with `warm_up`), each
    submitted `settle` s after the worker's slot went idle; each is cancelled once running.
    Returns the measurements and the id of the last job (finished: the GET load's job)."""
    result = SubmitToRunning(settle, [], [], [])
    job_id = ""
    wait_for_idle_worker(dep)
    time.sleep(settle)
    with httpx.Client(
        base_url=dep.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        for run in range(runs + warm_up):
            sent = time.perf_counter()
            response = client.post("/v1/jobs", json=IRIS_SPEC)
            posted = time.perf_counter()
            job_id = response.raise_for_status().json()["id"]
            job = _poll_until_claimed(client, job_id, deadline=sent + 60)
            seen = time.perf_counter()
            if warm_up and run == 0:
                result.cold_ms = (seen - sent) * 1e3
            else:
                result.client_ms.append((seen - sent) * 1e3)
                result.post_ms.append((posted - sent) * 1e3)
                started = datetime.fromisoformat(job["started_at"])
                created = datetime.fromisoformat(job["created_at"])
                result.server_ms.append((started - created).total_seconds() * 1e3)
            client.post(f"/v1/jobs/{job_id}/cancel")  # 409 if it already finished: fine
            _wait_until_ended(client, dep, job_id)
            wait_for_idle_worker(dep, 60)
            # The slot is cleared before Celery acks, and its next warm spare is still
            # starting: let both settle before the next measurement.
            time.sleep(settle)
    return result, job_id


def _poll_until_claimed(client: httpx.Client, job_id: str, deadline: float) -> dict[str, Any]:
    """Poll every 5 ms until the job is no longer queued; it must have started."""
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] != "queued":
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"job {job_id} still queued after 60 s")
        time.sleep(0.005)
    if job["started_at"] is None:
        raise RuntimeError(f"job {job_id} went {job['status']} without starting")
    return job


def _wait_until_ended(client: httpx.Client, dep: Deployment, job_id: str) -> None:
    def ended() -> bool:
        return client.get(f"/v1/jobs/{job_id}").json()["status"] in TERMINAL

    wait_until(ended, 60, what=f"job {job_id} to end", interval=0.05, watch=[dep.worker])


def newest_queued_job(dep: Deployment) -> tuple[str, int]:
    """The newest queued job's id and its queue position (how many jobs are queued)."""
    response = httpx.get(
        f"{dep.base_url}/v1/jobs",
        params={"status": "queued", "limit": 1},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    job = response.raise_for_status().json()["data"][0]
    return job["id"], int(job["queue_position"] or 0)


# -- report -----------------------------------------------------------------------------


def table(
    rows: list[Row],
    s2r: list[SubmitToRunning],
    client: str,
    args: argparse.Namespace,
    loadavg: tuple[float, float],
) -> str:
    lines = [
        f"load: {client}, {args.repeats} run(s) of ≤ {args.seconds:g} s "
        f"(≤ {args.max_requests} requests) per row; medians over the runs. "
        f"`backprop api --workers {args.api_workers}`. "
        f"{os.cpu_count()} CPUs; 1-min load average {loadavg[0]:.1f} before the start, "
        f"{loadavg[1]:.1f} at the end",
        "",
        "| endpoint | concurrency | requests | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.concurrency} | {sum(r.requests for r in row.runs):,} | "
            f"{row.median(lambda r: r.rps):,.0f} | {row.median(lambda r: r.p50_ms):.1f} | "
            f"{row.median(lambda r: r.p99_ms):.1f} | {sum(r.errors for r in row.runs)} |"
        )
    if s2r:
        lines += [
            "",
            "| submit-to-running (one worker, `--concurrency 1`) | jobs | median ms | max ms "
            "| `started_at − created_at` median ms | POST alone median ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for case in s2r:
            if not case.client_ms:
                continue
            lines.append(
                f"| submitted {case.settle:g} s after the previous job's slot went idle "
                f"| {len(case.client_ms)} | {statistics.median(case.client_ms):.0f} "
                f"| {max(case.client_ms):.0f} | {statistics.median(case.server_ms):.0f} "
                f"| {statistics.median(case.post_ms):.0f} |"
            )
        for case in s2r:
            if case.cold_ms is not None:
                lines.append(
                    f"\n(submit-to-running: POST sent → first 5 ms poll that sees `running`. "
                    f"An unmeasured first job — the API's first POST, the worker fresh — took "
                    f"{case.cold_ms:.0f} ms)"
                )
    return "\n".join(lines)


def verdicts(rows: list[Row], s2r: list[SubmitToRunning]) -> str:
    gets = [row for row in rows if row.name == "GET /v1/jobs/{id}"]
    lines = []
    if gets:
        best = max(gets, key=lambda row: row.median(lambda r: r.rps))
        rps, p99 = best.median(lambda r: r.rps), best.median(lambda r: r.p99_ms)
        ok = rps >= GET_RPS_TARGET and p99 < GET_P99_TARGET_MS
        lines.append(
            f"GET target (≥ {GET_RPS_TARGET} req/s with p99 < {GET_P99_TARGET_MS} ms): "
            f"{'met' if ok else 'MISSED'} — best {rps:,.0f} req/s at c={best.concurrency}, "
            f"p99 {p99:.1f} ms"
        )
    if s2r and s2r[0].client_ms:
        idle = s2r[0]
        median = statistics.median(idle.client_ms)
        ok = median < SUBMIT_TO_RUNNING_TARGET_MS
        lines.append(
            f"submit-to-running target (< {SUBMIT_TO_RUNNING_TARGET_MS} ms): "
            f"{'met' if ok else 'MISSED'} — median {median:.0f} ms, "
            f"max {max(idle.client_ms):.0f} ms on an idle worker"
        )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per load run (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="load runs per row (default 3)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="cap per load run")
    parser.add_argument("--concurrency", default="1,8,32", help="levels (default 1,8,32)")
    parser.add_argument("--runs", type=int, default=10, help="submit-to-running jobs (10)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="idle seconds before each such job (5)"
    )
    parser.add_argument(
        "--back-to-back", type=int, default=3, help="jobs submitted 0.3 s after idle (3)"
    )
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="`backprop api --workers` (default 1)"
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]

    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH (apt-get install wrk), use --client python")
    # SIGTERM as Ctrl-C, so that the `finally` blocks stop every process started here.
    signal.signal(signal.SIGTERM, _interrupt)

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="backprop-bench-api-"))
    try:
        runner = wrk_runner(work) if use_wrk else python_runner(API_KEY)
        client = "wrk, 1 thread" if use_wrk else "httpx, one thread per connection"
        print("starting PostgreSQL, Redis, backprop api and a worker …", file=sys.stderr)
        with deployment(work, args.api_workers) as dep:
            print(f"submit-to-running, {args.runs} jobs …", file=sys.stderr, flush=True)
            s2r: list[SubmitToRunning] = []
            finished_job = ""
            if args.runs:
                idle, finished_job = submit_to_running(dep, args.runs, args.settle, True)
                s2r.append(idle)
            if args.back_to_back:
                print(f"… and {args.back_to_back} back to back", file=sys.stderr, flush=True)
                busy, finished_job = submit_to_running(dep, args.back_to_back, 0.3, False)
                s2r.append(busy)
            dep.worker.stop(grace=10)  # the loads below run with no worker
            if not finished_job:
                made = httpx.post(
                    f"{dep.base_url}/v1/jobs",
                    json=IRIS_SPEC,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=30,
                )
                finished_job = made.raise_for_status().json()["id"]
            get = Load("GET", f"{dep.base_url}/v1/jobs/{finished_job}", None, 200)
            post = Load("POST", f"{dep.base_url}/v1/jobs", IRIS_SPEC, 201)
            print("warm-up …", file=sys.stderr, flush=True)
            runner(get, 8, 1.0, 2_000)
            runner(post, 8, 1.0, 200)
            print("load …", file=sys.stderr, flush=True)
            rows = measure(runner, "GET /v1/jobs/{id}", get, levels, args)
            rows += measure(runner, "POST /v1/jobs", post, levels, args)
            latest, queued = newest_queued_job(dep)
            queued_get = Load("GET", f"{dep.base_url}/v1/jobs/{latest}", None, 200)
            rows += measure(
                runner, f"GET /v1/jobs/{{id}} (queued, {queued:,} queued)", queued_get, [8], args
            )
            load_after = os.getloadavg()[0]
        print()
        print(table(rows, s2r, client, args, (load_before, load_after)))
        print()
        print(verdicts(rows, s2r))
        return 0
    except (pytest.skip.Exception, pytest.fail.Exception) as missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
