"""Sweeps: Backprop's random search with and without ASHA, against Optuna (and Ray Tune).

One search space on `builtin:digits`, API.md's digits CNN (`core.spec.examples.DIGITS_CNN`:
conv16-pool-flatten-dense-dropout-dense, Adam, early stopping on val_loss, patience 3):
learning rate log-uniform 1e-4..1e-1, the hidden dense layer's units (`model.layers[3]`)
in {32, 64, 128}, the dropout rate (`model.layers[4]`) uniform 0..0.5, batch size in
{32, 64}; at most `--epochs` epochs, metric val_accuracy (maximize), `--trials` trials,
`--concurrency` at once. Run four ways in one run:

- (a) Backprop: `backprop serve` in a fresh data directory, POST /v1/sweeps over HTTP,
  method random, no early termination;
- (b) the same with ASHA (`{"type": "asha", "min_epochs": 1, "reduction_factor": 3}`),
  in another fresh data directory (so its trials find no programs (a) compiled);
- (c) Optuna in this process, no service: the same draws (trial n samples from a
  RandomSampler seeded as Backprop seeds trial n), `SuccessiveHalvingPruner(min_resource=1,
  reduction_factor=3)`, `n_jobs=--concurrency` threads; each trial trains the CNN with a
  bare loop (`core.model.Model` for the layers, optax Adam, one jitted `lax.scan` per
  epoch, the engine's validation split and early-stopping rule) and reports val_accuracy
  after each epoch (`trial.report` / `trial.should_prune`): the no-service lower bound;
- (ray) Ray Tune, if `ray[tune]` is installed (`pip install -e '.[bench]'`): the same
  draws and the same bare loop in Ray's worker processes, `ASHAScheduler(grace_period=1,
  reduction_factor=3)`, `max_concurrent_trials=--concurrency`.

Per variant: trials (pruned), total trial-epochs (the sweep body's `epochs_used` for (a)
and (b)), wall time (POST to the sweep's terminal event; `study.optimize`; `Tuner.fit`),
the best val_accuracy (a trial's value is its last epoch's, pruned trials included, as in
the sweep body's `best`) and the wall time at which a trial first ended with val_accuracy
≥ `--target` (from the sweep's `trial` events, which are polled every 0.5 s).

    python bench/sweep.py                      # 27 trials, 2 at a time, 20 epochs
    python bench/sweep.py --quick              # a smoke run: --trials 3 --epochs 3, no Ray
    python bench/sweep.py --variants a,b --worker-concurrency 2

`backprop serve` runs one worker with one slot, so at most one trial trains at a time
whatever `max_concurrent` says; `--worker-concurrency N` runs compose's processes instead
(`backprop api` and `backprop worker --concurrency N`). A benchmark, not a test: numbers
are noisy on a shared 2-core machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.domain.sweeps.definition import SweepDefinition, parse_path, with_values  # noqa: E402
from app.domain.sweeps.sampling import suggest, trial_seed  # noqa: E402
from bench.gpu_check import free_port, spawn, wait_ready  # noqa: E402
from core.data import Dataset, load_builtin  # noqa: E402
from core.model import Model  # noqa: E402
from core.spec import JobSpec, parse_spec  # noqa: E402
from core.spec.examples import DIGITS_CNN  # noqa: E402
from core.train.data import split_validation  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRIAL_TERMINAL = ("succeeded", "failed", "cancelled")
ASHA = {"type": "asha", "min_epochs": 1, "reduction_factor": 3}
SPLIT_KEY = "bp_sweep_bench_key"
PHASES = ("queued", "startup", "compile", "training", "finalizing", "total")
LABELS = {
    "a": "(a) Backprop, random",
    "b": "(b) Backprop, random + ASHA",
    "c": "(c) Optuna + SuccessiveHalving, bare loop",
    "ray": "(ray) Ray Tune + ASHA, bare loop",
}


def sweep_body(trials: int, concurrency: int, epochs: int, seed: int) -> dict[str, Any]:
    """The sweep of variant (a); (b) adds `early_termination`."""
    spec = copy.deepcopy(DIGITS_CNN)
    spec["training"]["epochs"] = epochs
    spec["device"] = "cpu"
    assert spec["model"]["layers"][3]["type"] == "dense"  # the hidden dense layer
    assert spec["model"]["layers"][4]["type"] == "dropout"
    return {
        "name": "bench-digits",
        "spec": spec,
        "parameters": {
            "optimizer.learning_rate": {"distribution": "log_uniform", "min": 1e-4, "max": 1e-1},
            "model.layers[3].units": {"values": [32, 64, 128]},
            "model.layers[4].rate": {"distribution": "uniform", "min": 0.0, "max": 0.5},
            "training.batch_size": {"values": [32, 64]},
        },
        "method": "random",
        "metric": {"name": "val_accuracy", "goal": "maximize"},
        "max_trials": trials,
        "max_concurrent": concurrency,
        "seed": seed,
    }


@dataclass
class Outcome:
    """One variant's row."""

    trials: int
    pruned: int
    epochs: int  # total trial-epochs
    wall: float  # seconds
    best: float | None
    reached: float | None  # seconds until a trial first ended at or above the target
    note: str = ""


# -- (a), (b): Backprop over HTTP -------------------------------------------------------


def start_service(work: Path, port: int, worker_concurrency: int) -> list[subprocess.Popen[bytes]]:
    """`backprop serve`; or, for more than one slot, compose's `api` and one worker."""
    data = str(work / "data")
    if worker_concurrency == 1:
        return [spawn(["serve", "--data-dir", data, "--port", str(port)], work / "serve.log")]
    env = {"BACKPROP_DATA_DIR": data, "BACKPROP_BOOTSTRAP_API_KEY": SPLIT_KEY}
    migrate = spawn(["migrate"], work / "migrate.log", **env)
    if migrate.wait(120) != 0:
        raise RuntimeError((work / "migrate.log").read_text())
    return [
        spawn(["api", "--port", str(port)], work / "serve.log", **env),
        spawn(
            ["worker", "--concurrency", str(worker_concurrency)],
            work / "worker.log",
            BACKPROP_WORKER_NAME="bench",
            **env,
        ),
    ]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def sse(client: httpx.Client, url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a Server-Sent Events stream, until the server ends it."""
    with client.stream("GET", url, timeout=httpx.Timeout(60, read=120)) as stream:
        stream.raise_for_status()
        event = "message"
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                yield event, json.loads(line.split(":", 1)[1])
            elif not line:
                event = "message"


def run_backprop(
    body: dict[str, Any], worker_concurrency: int, warmup: float, target: float
) -> tuple[Outcome, list[dict[str, Any]]]:
    """Serve in a fresh data directory, run the sweep, follow its events; the row and the
    trials (`GET /v1/sweeps/{id}/trials`)."""
    work = Path(tempfile.mkdtemp(prefix="backprop-sweep-"))
    port = free_port()
    began = time.perf_counter()
    processes = start_service(work, port, worker_concurrency)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, processes[0], work / "serve.log")
            print(f"  {body['name']}: ready in {time.perf_counter() - began:.1f} s", flush=True)
            key = (
                SPLIT_KEY
                if worker_concurrency > 1
                else (work / "data" / "api_key").read_text().strip()
            )
            client.headers["Authorization"] = f"Bearer {key}"
            time.sleep(warmup)  # the worker's slots have started, their spares are ready
            started = time.perf_counter()
            response = client.post("/v1/sweeps", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/sweeps: {response.status_code} {response.text}")
            sweep = response.json()
            reached = None
            for event, data in sse(client, f"/v1/sweeps/{sweep['id']}/events"):
                now = time.perf_counter() - started
                if event == "trial" and data["status"] in TRIAL_TERMINAL:
                    value = data.get("value")
                    if reached is None and value is not None and value >= target:
                        reached = now
                elif event == "sweep":
                    sweep = data
            wall = time.perf_counter() - started
            sweep = client.get(f"/v1/sweeps/{sweep['id']}").json()
            trials = client.get(f"/v1/sweeps/{sweep['id']}/trials").json()["data"]
            jobs = client.get("/v1/jobs", params={"sweep": sweep["id"], "limit": 200}).json()
            timings = {job["id"]: job["timings"] for job in jobs["data"]}
            for trial in trials:
                trial["timings"] = timings.get(trial["job_id"]) or {}
    finally:
        stop(processes)
    if sweep["status"] != "succeeded" or sweep["trials"]["failed"]:
        raise RuntimeError(f"sweep ended {sweep['status']}: {sweep['trials']}; logs in {work}")
    counts = sweep["trials"]
    best = sweep["best"]["value"] if sweep["best"] else None
    outcome = Outcome(counts["total"], counts["pruned"], sweep["epochs_used"], wall, best, reached)
    outcome.note = "seconds summed over trials: " + ", ".join(
        f"{phase} {sum(t['timings'].get(phase) or 0.0 for t in trials):.1f}" for phase in PHASES
    )
    return outcome, trials


# -- (c), (ray): the bare loop ------------------------------------------------------------


class BareRun(NamedTuple):
    epochs: int  # trained
    value: float  # the last epoch's val_accuracy
    pruned: bool
    first: float  # seconds to the end of the first epoch: set-up, compiling, one epoch
    rest: float  # seconds of the other epochs


def train_bare(
    spec: JobSpec, dataset: Dataset, on_epoch: Callable[[int, float, bool], bool]
) -> BareRun:
    """Train `spec`'s CNN with a plain loop: Adam, one jitted `lax.scan` over an epoch's
    shuffled batches, validation after each epoch, the spec's early stopping. After epoch
    count n, `on_epoch(n, val_accuracy, last)` (`last`: the run ends here anyway, all
    epochs done or early stopping) returns True to stop it (pruned)."""
    began = time.perf_counter()
    train, val = split_validation(spec, dataset, None)
    x, y = jnp.asarray(train.x), jnp.asarray(train.y)
    xv, yv = jnp.asarray(val.x), jnp.asarray(val.y)
    n, batch = len(train.x), int(spec.training.batch_size)
    steps = -(-n // batch)
    model = Model(spec.model)
    rate = spec.optimizer.learning_rate
    assert getattr(rate, "type", None) == "constant"
    tx = optax.adam(rate.value)
    init_key, data_key = jax.random.split(jax.random.PRNGKey(spec.training.seed))
    params, state = jax.jit(model.init, static_argnums=1)(init_key, tuple(train.info.input_shape))
    opt = tx.init(params)

    def loss(p: Any, xb: jax.Array, yb: jax.Array, wb: jax.Array, key: jax.Array) -> jax.Array:
        out, _ = model.apply(p, state, xb, train=True, key=key)
        per = optax.softmax_cross_entropy_with_integer_labels(out, yb)
        return jnp.sum(per * wb) / jnp.sum(wb)

    @partial(jax.jit, donate_argnums=(0, 1))
    def epoch(p: Any, o: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> Any:
        # Padded to whole batches with zero weights, as the engine does.
        order = jnp.concatenate(
            [jax.random.permutation(key, n), jnp.zeros(steps * batch - n, jnp.int32)]
        )
        weight = (jnp.arange(steps * batch) < n).astype(jnp.float32)

        def body(carry: Any, i: jax.Array) -> tuple[Any, None]:
            p, o = carry
            idx = jax.lax.dynamic_slice(order, (i * batch,), (batch,))
            w = jax.lax.dynamic_slice(weight, (i * batch,), (batch,))
            grads = jax.grad(loss)(p, x[idx], y[idx], w, jax.random.fold_in(key, i))
            updates, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), None

        return jax.lax.scan(body, (p, o), jnp.arange(steps))[0]

    @jax.jit
    def evaluate(p: Any, xv: jax.Array, yv: jax.Array) -> tuple[jax.Array, jax.Array]:
        out, _ = model.apply(p, state, xv, train=False)
        per = optax.softmax_cross_entropy_with_integer_labels(out, yv)
        return jnp.mean(per), jnp.mean((jnp.argmax(out, -1) == yv).astype(jnp.float32))

    early = spec.training.early_stopping
    assert early is None or (early.monitor == "val_loss" and early.mode == "min")
    best_loss, wait = math.inf, 0
    first = 0.0
    for count in range(1, spec.training.epochs + 1):
        params, opt = epoch(params, opt, x, y, jax.random.fold_in(data_key, count - 1))
        val_loss, accuracy = (float(v) for v in evaluate(params, xv, yv))
        if count == 1:
            first = time.perf_counter() - began
        last = count == spec.training.epochs
        if early is not None:  # the engine's rule: stop after `patience` epochs without a gain
            improved = count == 1 or best_loss - val_loss > early.min_delta
            best_loss, wait = (val_loss, 0) if improved else (best_loss, wait + 1)
            last = last or (not improved and wait >= max(early.patience, 1))
        pruned = on_epoch(count, accuracy, last) and not last
        if pruned or last:
            return BareRun(count, accuracy, pruned, first, time.perf_counter() - began - first)
    raise AssertionError("unreachable: the last epoch returns")


def draws(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The values Backprop's random sweep gives each trial (its sampler ignores history)."""
    definition = SweepDefinition.model_validate(body)
    return [suggest(definition, [], number).params for number in range(body["max_trials"])]


def trial_spec(base: dict[str, Any], params: dict[str, Any]) -> JobSpec:
    return parse_spec(with_values(base, {parse_path(p): v for p, v in params.items()}))


class BackpropRandom(optuna.samplers.BaseSampler):
    """Optuna's RandomSampler, seeded per trial as Backprop's random method seeds it:
    trial n draws from `RandomSampler(seed=trial_seed(seed, n))`, so (c) tries the same
    values as (a) and (b) whatever order the threads ask in."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.samplers: dict[int, optuna.samplers.RandomSampler] = {}
        self.lock = threading.Lock()

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        with self.lock:
            if trial.number not in self.samplers:
                seed = trial_seed(self.seed, trial.number)
                self.samplers[trial.number] = optuna.samplers.RandomSampler(seed=seed)
            sampler = self.samplers[trial.number]
        return sampler.sample_independent(study, trial, name, distribution)


def run_optuna(body: dict[str, Any], target: float) -> tuple[Outcome, list[dict[str, Any]]]:
    """Variant (c): the same space, seeds, pruning rule and bare loop in this process."""
    dataset = load_builtin("digits")
    base = parse_spec(body["spec"]).model_dump(mode="json")
    space = body["parameters"]
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        # In the order of the sweep's parameters, with Backprop's encoding (categorical
        # values by index), so each draw matches the service's.
        lr = space["optimizer.learning_rate"]
        rate = space["model.layers[4].rate"]
        units = space["model.layers[3].units"]["values"]
        sizes = space["training.batch_size"]["values"]
        params = {
            "optimizer.learning_rate": trial.suggest_float(
                "optimizer.learning_rate", lr["min"], lr["max"], log=True
            ),
            "model.layers[3].units": units[
                trial.suggest_categorical("model.layers[3].units", list(range(len(units))))
            ],
            "model.layers[4].rate": trial.suggest_float(
                "model.layers[4].rate", rate["min"], rate["max"]
            ),
            "training.batch_size": sizes[
                trial.suggest_categorical("training.batch_size", list(range(len(sizes))))
            ],
        }

        def on_epoch(count: int, accuracy: float, last: bool) -> bool:
            trial.report(accuracy, count)
            return not last and trial.should_prune()

        run = train_bare(trial_spec(base, params), dataset, on_epoch)
        with lock:
            rows.append(
                {
                    "number": trial.number,
                    "params": params,
                    "epochs": run.epochs,
                    "value": run.value,
                    "pruned": run.pruned,
                    "ended": time.perf_counter() - started,
                    "timings": {"first epoch": run.first, "other epochs": run.rest},
                }
            )
        if run.pruned:
            raise optuna.TrialPruned()
        return run.value

    study = optuna.create_study(
        direction="maximize",
        sampler=BackpropRandom(body["seed"]),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    study.optimize(objective, n_trials=body["max_trials"], n_jobs=body["max_concurrent"])
    wall = time.perf_counter() - started
    outcome = outcome_of(rows, wall, target)
    outcome.note = "seconds summed over trials: " + ", ".join(
        f"{phase} {sum(r['timings'][phase] for r in rows):.1f}"
        for phase in ("first epoch", "other epochs")
    )
    return outcome, sorted(rows, key=lambda r: r["number"])


def outcome_of(rows: list[dict[str, Any]], wall: float, target: float) -> Outcome:
    values = [r["value"] for r in rows if math.isfinite(r["value"])]
    hits = [r["ended"] for r in rows if r["value"] >= target]
    return Outcome(
        trials=len(rows),
        pruned=sum(r["pruned"] for r in rows),
        epochs=sum(r["epochs"] for r in rows),
        wall=wall,
        best=max(values) if values else None,
        reached=min(hits) if hits else None,
    )


def ray_trial(config: dict[str, Any], specs: list[dict[str, Any]]) -> None:
    """A Ray Tune function trainable: trial `config["trial"]`'s spec, one report an epoch."""
    from ray import tune

    dataset = load_builtin("digits")

    def on_epoch(count: int, accuracy: float, last: bool) -> bool:
        tune.report({"val_accuracy": accuracy, "epoch": count, "last": last, "now": time.time()})
        return False  # the scheduler stops the trial itself

    train_bare(parse_spec(specs[config["trial"]]), dataset, on_epoch)


def run_ray(body: dict[str, Any], target: float) -> tuple[Outcome, list[dict[str, Any]]] | str:
    """Variant (ray), or why it was skipped."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local throw-away cluster
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    base = parse_spec(body["spec"]).model_dump(mode="json")
    space = draws(body)
    specs = [trial_spec(base, params).model_dump(mode="json") for params in space]
    storage = tempfile.mkdtemp(prefix="backprop-sweep-ray-")
    with warnings.catch_warnings():
        # Ray starts its processes with fork + exec (subprocess), which JAX's warning about
        # forking a multithreaded process does not apply to.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}},
        )
    try:
        tuner = tune.Tuner(
            tune.with_parameters(ray_trial, specs=specs),
            # The same draws as (a)-(c), one trial each, in trial order.
            param_space={"trial": tune.grid_search(list(range(len(specs))))},
            tune_config=tune.TuneConfig(
                metric="val_accuracy",
                mode="max",
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    max_t=body["spec"]["training"]["epochs"],
                    grace_period=1,
                    reduction_factor=3,
                ),
                max_concurrent_trials=body["max_concurrent"],
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        started_wall, started = time.time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # Ray's own progress tables
            results = tuner.fit()
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    rows = []
    for result in results:
        if result.error is not None:
            raise RuntimeError(f"ray trial failed: {result.error}")
        last = result.metrics
        rows.append(
            {
                "number": result.config["trial"],
                "params": space[result.config["trial"]],
                "epochs": int(last["epoch"]),
                "value": float(last["val_accuracy"]),
                "pruned": not last["last"],  # stopped by the scheduler
                "ended": float(last["now"]) - started_wall,
            }
        )
    return outcome_of(rows, wall, target), sorted(rows, key=lambda r: r["number"])


# -- the table ----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_table(results: dict[str, Outcome], target: float) -> None:
    print(
        f"| variant | trials (pruned) | trial-epochs | wall s | best val_accuracy | "
        f"first ≥ {target} at s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for key, row in results.items():
        print(
            f"| {LABELS[key]} | {row.trials} ({row.pruned}) | {row.epochs} | {row.wall:.1f} | "
            f"{fmt(row.best, 4)} | {fmt(row.reached)} |",
            flush=True,
        )


def print_ratios(results: dict[str, Outcome]) -> None:
    a, b, c = results.get("a"), results.get("b"), results.get("c")
    lines = []
    if a and b:
        share = b.epochs / a.epochs
        lines.append(
            f"(b)/(a) trial-epochs: {share:.2f} (target ≤ 0.40: "
            f"{'met' if share <= 0.40 else 'NOT met'})"
        )
        if a.best is not None and b.best is not None:
            gap = b.best - a.best
            lines.append(
                f"(b) best − (a) best: {gap:+.4f} (target ≥ −0.005: "
                f"{'met' if gap >= -0.005 else 'NOT met'})"
            )
    if b and c:
        ratio = b.wall / c.wall
        lines.append(
            f"(b)/(c) wall: {ratio:.2f} (target ≤ 1.5: {'met' if ratio <= 1.5 else 'NOT met'})"
        )
    if results.get("ray") and b:
        lines.append(f"(b)/(ray) wall: {b.wall / results['ray'].wall:.2f}")
    for line in lines:
        print(line)


def print_trials(name: str, trials: list[dict[str, Any]]) -> None:
    print(f"\n{name}: number, epochs, value, pruned, params, seconds")
    for t in trials:
        value = t.get("value")
        timings = t.get("timings", {})
        phases = " ".join(f"{p} {fmt(v, 2)}" for p, v in timings.items())
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" for k, v in t["params"].items())
        print(
            f"  {t['number']:>3} {t['epochs']:>3} {fmt(value, 4):>7} "
            f"{'pruned' if t.get('pruned') else '':<6} {params} {phases}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--concurrency", type=int, default=2, help="max_concurrent / n_jobs")
    parser.add_argument("--epochs", type=int, default=20, help="at most, per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.97, help="val_accuracy to reach")
    parser.add_argument("--variants", default="a,b,c,ray", help="of a, b, c, ray")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="1: `backprop serve` (one slot); N: `backprop api` + `backprop worker "
        "--concurrency N`",
    )
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds between ready and the POST"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: --trials 3 --epochs 3, no Ray"
    )
    parser.add_argument("--verbose", action="store_true", help="print every trial")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.quick:
        args.trials, args.epochs, args.warmup = 3, 3, 2.0
        variants = [v for v in variants if v != "ray"]

    body = sweep_body(args.trials, args.concurrency, args.epochs, args.seed)
    print(
        f"{args.trials} trials, {args.concurrency} at once, ≤ {args.epochs} epochs; "
        f"worker slots: {args.worker_concurrency}; load average at the start: "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)",
        flush=True,
    )
    expected = draws(body)
    results: dict[str, Outcome] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    for key in variants:
        if key in ("a", "b"):
            sweep = dict(body, name=f"bench-{key}")
            if key == "b":
                sweep["early_termination"] = ASHA
            results[key], details[key] = run_backprop(
                sweep, args.worker_concurrency, args.warmup, args.target
            )
        elif key == "c":
            results[key], details[key] = run_optuna(body, args.target)
        elif key == "ray":
            ray = run_ray(body, args.target)
            if isinstance(ray, str):
                print(f"Ray Tune skipped: {ray}")
                continue
            results[key], details[key] = ray
        else:
            parser.error(f"unknown variant {key!r}")
        print(f"{LABELS[key]}: done in {results[key].wall:.1f} s", flush=True)
        same = [t["params"] for t in details[key] if "params" in t]
        if same and not same_draws(same, expected):
            print(f"  warning: {LABELS[key]}'s draws differ from Backprop's random method")
    print(
        f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n",
        flush=True,
    )
    print_table(results, args.target)
    for key, row in results.items():
        if row.note:
            print(f"{LABELS[key]}: {row.note}")
    print()
    print_ratios(results)
    if args.verbose:
        for key, trials in details.items():
            print_trials(LABELS[key], trials)


def same_draws(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return all(
        np.allclose([float(v) for v in g.values()], [float(e[k]) for k in g], rtol=1e-9, atol=0.0)
        for g, e in zip(got, expected, strict=False)
    )


if __name__ == "__main__":
    main()
