"""Jobs through real processes, in both deployments: `server` (PostgreSQL, Redis,
`backprop api`, `backprop worker`) and `embedded` (`backprop serve`).

Submitted over HTTP, trained by a real Celery worker, read back over HTTP: metrics, the
model file (loaded with `core.export` and run with `core.model`), cancellation within
two seconds, and a worker SIGKILLed mid-job whose job resumes from its checkpoint.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from core.data import load_builtin
from core.export import import_model
from core.model import Model
from tests.integration.deployments import Deployment
from tests.servers import wait_until
from tests.specs import DIGITS_MLP, LONG_DIGITS_MLP, XOR

JOB_SECONDS = 180  # a bound, not an expectation: these jobs take seconds
CANCEL_SECONDS = 2.0  # API.md: a running job is cancelled within 2 seconds
# Series recorded once per epoch (docs/engine.md, "Metric names").
EPOCH_SERIES = ("epoch_loss", "accuracy")


def assert_metrics_well_formed(series: dict[str, dict[str, list[Any]]], epochs: int) -> None:
    assert {"loss", *EPOCH_SERIES} <= series.keys()
    for name, points in series.items():
        steps = points["step"]
        assert all(a < b for a, b in itertools.pairwise(steps)), name
        assert len(points["epoch"]) == len(points["value"]) == len(points["time"]) == len(steps)
    for name in EPOCH_SERIES:
        assert series[name]["epoch"] == list(range(epochs)), name


def assert_model_reaches_the_job_accuracy(model_file: bytes, job: dict[str, Any]) -> float:
    """Load the downloaded model and score it on the job's (built-in) data."""
    params, state, spec = import_model(model_file)
    assert spec.model_dump(mode="json") == job["spec"]
    data = load_builtin(job["dataset"].removeprefix("builtin:"))
    logits, _ = Model(spec.model).apply(params, state, jnp.asarray(data.x), train=False)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=-1) == data.y))
    assert accuracy >= job["summary"]["accuracy"] - 0.02, (accuracy, job["summary"])
    return accuracy


def test_xor_job_succeeds_and_its_model_predicts(deployment: Deployment) -> None:
    client = deployment.client
    job_id = client.submit(XOR)["id"]
    job = client.wait_for_job(job_id, "succeeded", JOB_SECONDS)

    assert job["attempt"] == 1
    assert job["progress"]["fraction"] == 1.0
    assert job["summary"]["accuracy"] == 1.0
    assert_metrics_well_formed(client.metrics(job_id), XOR["training"]["epochs"])
    assert assert_model_reaches_the_job_accuracy(client.model(job_id), job) == 1.0


@pytest.mark.parametrize("deployment", ["server"], indirect=True)
def test_digits_job_succeeds_and_its_model_predicts(deployment: Deployment) -> None:
    client = deployment.client
    job_id = client.submit(DIGITS_MLP)["id"]
    job = client.wait_for_job(job_id, "succeeded", JOB_SECONDS)

    series = client.metrics(job_id)
    epochs = DIGITS_MLP["training"]["epochs"]
    assert_metrics_well_formed(series, epochs)
    assert series["val_accuracy"]["epoch"] == list(range(epochs))
    assert job["summary"]["val_accuracy"] > 0.9
    assert assert_model_reaches_the_job_accuracy(client.model(job_id), job) > 0.9


def test_cancel_of_a_running_job_lands_within_two_seconds(deployment: Deployment) -> None:
    client = deployment.client
    job_id = client.submit(LONG_DIGITS_MLP)["id"]
    client.wait_for_progress(job_id, epoch=1, timeout=JOB_SECONDS)
    before = set(deployment.training_processes())  # the job's, and its slot's warm spare

    requested = time.monotonic()
    response = client.cancel(job_id)
    assert response.status_code == 202, response.text
    job = client.wait_for_job(job_id, "cancelled", timeout=30, interval=0.02)
    took = time.monotonic() - requested

    print(f"cancel landed {took:.2f} s after the request ({deployment.mode})")
    assert took < CANCEL_SECONDS, f"cancelled {took:.2f} s after the request"
    assert job["finished_at"] is not None
    assert job["progress"]["epoch"] < LONG_DIGITS_MLP["training"]["epochs"]
    assert client.cancel(job_id).status_code == 409  # already finished
    wait_until(
        lambda: len(before - set(deployment.training_processes())) == 1,
        10,
        what="the cancelled job's training process to exit (the spare stays)",
    )


def test_a_killed_worker_s_job_resumes_from_its_checkpoint(deployment: Deployment) -> None:
    client, store = deployment.client, deployment.store
    epochs = LONG_DIGITS_MLP["training"]["epochs"]
    job_id = client.submit(LONG_DIGITS_MLP)["id"]
    client.wait_for_progress(job_id, epoch=3, timeout=JOB_SECONDS)
    # Progress and the checkpoint record are separate writes: crash only once one is durable.
    wait_until(
        lambda: (store.job(job_id)["checkpoint_epoch"] or 0) >= 3, JOB_SECONDS, what="a checkpoint"
    )

    deployment.crash_worker()
    killed_at = datetime.now(UTC)  # the dead worker wrote everything it wrote before this
    before = store.job(job_id)
    checkpoint = before["checkpoint_epoch"]
    assert before["status"] in ("running", "queued")  # queued once the lease has run out
    assert checkpoint is not None and 3 <= checkpoint < epochs

    deployment.start_worker()
    job = deployment.client.wait_for_job(job_id, "succeeded", JOB_SECONDS)

    # A lost worker is the platform's doing: the same attempt, one interruption.
    assert (job["attempt"], job["platform_interruptions"]) == (1, 1)
    assert job["worker"] != before["worker"]
    assert job["summary"]["epochs_completed"] == epochs
    rows, distinct = store.metric_counts(job_id)
    assert rows == distinct, "a metric (name, step) was written twice"

    points = store.metric_rows(job_id)
    # Nothing the first attempt finished before its checkpoint was computed again …
    assert all(p.time < killed_at for p in points if p.epoch < checkpoint)
    # … and the second attempt started right after a checkpoint: the epoch-level series hold
    # each epoch once, older than the kill up to some epoch ≥ the recorded checkpoint (a
    # newer checkpoint file may have been durable without being recorded yet), newer after.
    for name in EPOCH_SERIES:
        series = [p for p in points if p.name == name]
        assert [p.epoch for p in series] == list(range(epochs)), name
        resumed_at = sum(p.time < killed_at for p in series)
        assert checkpoint <= resumed_at <= checkpoint + 1, (name, checkpoint, resumed_at)
        assert all(p.time < killed_at for p in series[:resumed_at]), name
        assert all(p.time > killed_at for p in series[resumed_at:]), name
