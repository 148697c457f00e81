"""The `backprop.run_job` task called directly: each job trains in a real child process."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Artifact, Job, Metric, Worker
from app.domain.db.types import utcnow
from core.export import import_model
from tests.specs import diverging_sine_mlp, endless_digits_mlp, xor_mlp
from tests.worker.conftest import MakeJob, read_job, wait_for
from worker.draining import drain_flag
from worker.exits import cause_of_exit
from worker.recorder import FLUSH_SECONDS
from worker.train_process import EXIT_ORPHANED, EXIT_SUSPENDED

RunTask = Callable[[str], str]


def _metrics(factory: sessionmaker[Session], job_id: str) -> list[Metric]:
    with transaction(factory) as session:
        return list(
            session.scalars(
                select(Metric).where(Metric.job_id == job_id).order_by(Metric.name, Metric.step)
            )
        )


def _training_children() -> list[int]:
    """Pids of this process's `worker.train_process` children (Linux /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, ValueError):
            continue
        if parent == os.getpid() and b"worker.train_process" in command:
            found.append(int(entry.name))
    return found


@contextmanager
def _task_in_background(run_task: RunTask, job_id: str) -> Iterator[dict[str, str]]:
    outcome: dict[str, str] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_task(job_id)))
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(timeout=120)
        assert not thread.is_alive()


def _training(factory: sessionmaker[Session], job_id: str) -> bool:
    job = read_job(factory, job_id)
    return job.status == "running" and job.progress is not None and job.progress.step > 0


def test_trains_xor_end_to_end(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask, settings: Settings
) -> None:
    job_id = make_job(xor_mlp(epochs=40))

    assert run_task(job_id) == "finished"

    job = read_job(factory, job_id)
    assert job.status == "succeeded", job.error
    assert (job.attempt, job.worker, job.device, job.error) == (1, "test-worker", "cpu", None)
    assert job.started_at is not None and job.finished_at is not None
    assert job.progress is not None and job.progress.fraction == 1.0
    assert job.progress.epoch == job.progress.epochs == 40
    assert job.summary is not None
    assert job.summary["samples_per_second"] > 0
    assert job.summary["accuracy"] == 1.0 and job.summary["stop_reason"] == "completed"
    assert job.summary["device"] == "cpu"
    assert job.checkpoint_epoch == 40
    assert_consistent_timings(job)

    points = _metrics(factory, job_id)
    series: dict[str, list[Metric]] = {}
    for point in points:
        series.setdefault(point.name, []).append(point)
    assert {"loss", "epoch_loss", "accuracy", "learning_rate"} <= series.keys()
    assert [p.step for p in series["loss"]] == list(range(1, 41))  # one step per epoch
    for name, rows in series.items():
        steps, epochs = [p.step for p in rows], [p.epoch for p in rows]
        assert steps == sorted(set(steps)), name
        assert epochs == sorted(epochs), name

    assert job.model_path == f"jobs/{job_id}/model.safetensors"
    params, _state, spec = import_model(settings.data_dir / job.model_path)
    assert params["dense_0"]["kernel"].shape == (2, 8)
    assert spec.training.epochs == 40
    with transaction(factory) as session:
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        worker = session.get(Worker, "test-worker")
    kinds = sorted(a.kind for a in artifacts)
    assert kinds.count("model") == 1 and 1 <= kinds.count("checkpoint") <= 2
    assert all((settings.data_dir / a.path).is_file() for a in artifacts)
    assert worker is not None and worker.running_job_id is None and worker.idle_since is not None

    # init_from: zero epochs only initialise, so the new model is exactly the first one.
    follow_up = make_job({**xor_mlp(epochs=0), "init_from": {"job": job_id}})
    assert run_task(follow_up) == "finished"
    copied = read_job(factory, follow_up)
    assert copied.status == "succeeded", copied.error
    assert copied.model_path is not None
    copied_params, _, _ = import_model(settings.data_dir / copied.model_path)
    for layer, tensors in params.items():
        for name, array in tensors.items():
            np.testing.assert_array_equal(copied_params[layer][name], array)


def assert_consistent_timings(job: Job) -> None:
    """Every phase of a finished job is reached, and the phases add up to the total."""
    timings = job.timings
    phases = [timings.queued, timings.startup, timings.compile, timings.training]
    phases.append(timings.finalizing)
    assert all(value is not None and value >= 0 for value in phases), timings
    assert timings.total is not None and timings.total > 0
    assert abs(sum(phases) - timings.total) <= 0.05 * timings.total, timings  # type: ignore[arg-type]
    assert job.finished_at is not None
    created_to_finished = (job.finished_at - job.created_at).total_seconds()
    assert timings.total == pytest.approx(created_to_finished, abs=1e-3)


def test_a_long_run_of_tiny_epochs_writes_its_series_in_bulk(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask
) -> None:
    epochs = 20_000
    job_id = make_job(xor_mlp(epochs=epochs, log_every_steps=10))

    assert run_task(job_id) == "finished"

    job = read_job(factory, job_id)
    assert job.status == "succeeded", job.error
    points = _metrics(factory, job_id)
    epoch_loss = [p for p in points if p.name == "epoch_loss"]
    assert [p.step for p in epoch_loss] == list(range(1, epochs + 1))  # every epoch, once
    # Points written in one flush share its timestamp: about one flush a second, not one
    # per epoch (and one more with the checkpoint at the end).
    assert job.started_at is not None and job.finished_at is not None
    seconds = (job.finished_at - job.started_at).total_seconds()
    flushes = {p.time for p in points}
    assert len(flushes) <= seconds / FLUSH_SECONDS + 3, (len(flushes), seconds)


def test_cancel_lands_within_two_seconds(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask
) -> None:
    job_id = make_job(endless_digits_mlp(checkpoint_every_epochs=None))
    with _task_in_background(run_task, job_id) as outcome:
        wait_for(lambda: _training(factory, job_id), 60, what="training to start")
        with transaction(factory) as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.cancel_requested = True
        asked = time.monotonic()
        wait_for(lambda: read_job(factory, job_id).status != "running", 5, what="cancel")
        assert time.monotonic() - asked < 2.0
    assert outcome["result"] == "finished"  # the child stopped at a chunk boundary itself
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.error) == ("cancelled", 1, None)


def test_cancel_kills_a_child_that_does_not_stop(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask
) -> None:
    job_id = make_job(endless_digits_mlp(checkpoint_every_epochs=None))
    with _task_in_background(run_task, job_id) as outcome:
        wait_for(lambda: _training(factory, job_id), 60, what="training to start")
        (child,) = _training_children()
        os.kill(child, signal.SIGSTOP)  # stuck: e.g. inside one long compiled chunk
        with transaction(factory) as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.cancel_requested = True
        asked = time.monotonic()
        wait_for(lambda: read_job(factory, job_id).status != "running", 5, what="cancel")
        assert time.monotonic() - asked < 2.0
    assert outcome["result"] == "cancelled"
    assert read_job(factory, job_id).status == "cancelled"


def _epochs_done(factory: sessionmaker[Session], job_id: str) -> int:
    progress = read_job(factory, job_id).progress
    return 0 if progress is None else progress.epoch


@contextmanager
def _draining(settings: Settings) -> Iterator[None]:
    """What the Celery main process does when SIGTERM / Ctrl-C starts its warm shutdown;
    here the "main process" is the parent of the process running the task."""
    flag = drain_flag(settings, os.getppid())
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    try:
        yield
    finally:
        flag.unlink()


def test_a_stopping_worker_hands_its_job_back_after_a_checkpoint(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask, settings: Settings
) -> None:
    # No periodic checkpoint: the only one is written when the worker asks the child to stop.
    job_id = make_job(endless_digits_mlp(checkpoint_every_epochs=None))
    with _task_in_background(run_task, job_id) as outcome:
        wait_for(lambda: _training(factory, job_id), 60, what="training to start")
        wait_for(lambda: _epochs_done(factory, job_id) >= 2, 30, what="two epochs")
        assert read_job(factory, job_id).checkpoint_epoch is None
        with _draining(settings):
            stopping = time.monotonic()
            wait_for(lambda: read_job(factory, job_id).status != "running", 10, what="hand-back")
            assert time.monotonic() - stopping < settings.shutdown_grace_seconds
    assert outcome["result"] == "handed_back"
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions, job.worker, job.error) == (
        "queued",
        1,
        0,
        None,
        None,
    )
    assert job.checkpoint_epoch is not None and job.checkpoint_epoch >= 2
    assert not _training_children()


def test_a_child_that_does_not_stop_is_killed_after_the_grace_and_handed_back(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask, settings: Settings
) -> None:
    settings.shutdown_grace_seconds = 1.0
    job_id = make_job(endless_digits_mlp(checkpoint_every_epochs=None))
    with _task_in_background(run_task, job_id) as outcome:
        wait_for(lambda: _training(factory, job_id), 60, what="training to start")
        (child,) = _training_children()
        os.kill(child, signal.SIGSTOP)  # stuck: e.g. inside one long compiled chunk
        with _draining(settings):
            stopping = time.monotonic()
            wait_for(lambda: read_job(factory, job_id).status != "running", 10, what="hand-back")
            took = time.monotonic() - stopping
    assert settings.shutdown_grace_seconds <= took < settings.shutdown_grace_seconds + 2
    assert outcome["result"] == "handed_back"
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions) == ("queued", 1, 0)
    assert job.checkpoint_epoch is None  # it never got to write one
    assert not _training_children()


@pytest.mark.parametrize(
    ("sig", "attempt", "interruptions"),
    [
        (signal.SIGTERM, 1, 1),  # from outside: it checkpoints and stops; the platform's doing
        (signal.SIGSEGV, 2, 0),  # a crash of its own
    ],
)
def test_a_signalled_child_is_counted_by_who_is_to_blame(
    factory: sessionmaker[Session],
    make_job: MakeJob,
    run_task: RunTask,
    sig: signal.Signals,
    attempt: int,
    interruptions: int,
) -> None:
    job_id = make_job(endless_digits_mlp(checkpoint_every_epochs=None))
    with _task_in_background(run_task, job_id) as outcome:
        wait_for(lambda: _training(factory, job_id), 60, what="training to start")
        (child,) = _training_children()
        os.kill(child, sig)
    assert outcome["result"] == "requeued"
    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions) == (
        "queued",
        attempt,
        interruptions,
    )
    # SIGTERM is a request to stop: the child wrote a checkpoint first.
    assert (job.checkpoint_epoch is not None) == (sig == signal.SIGTERM)


def test_cause_of_exit() -> None:
    assert cause_of_exit(-signal.SIGKILL) == cause_of_exit(-signal.SIGTERM) == "platform"
    assert cause_of_exit(EXIT_ORPHANED) == cause_of_exit(EXIT_SUSPENDED) == "platform"
    assert cause_of_exit(-signal.SIGSEGV) == cause_of_exit(-signal.SIGABRT) == "crash"
    assert cause_of_exit(1) == cause_of_exit(0) == "crash"


def test_a_spec_that_does_not_fit_the_data_fails_without_retry(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask
) -> None:
    spec = xor_mlp()
    spec["model"]["layers"].insert(0, {"type": "conv2d", "filters": 4, "kernel_size": 3})
    job_id = make_job(spec)

    assert run_task(job_id) == "finished"

    job = read_job(factory, job_id)
    assert (job.status, job.attempt) == ("failed", 1)
    assert job.error is not None and job.error.code == "invalid_spec"
    assert "conv2d_0" in job.error.message


def test_a_diverging_run_fails_with_non_finite_loss(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask
) -> None:
    spec = {**diverging_sine_mlp(epochs=20, batch_size=32), "device": "cpu"}
    job_id = make_job(spec)

    assert run_task(job_id) == "finished"

    job = read_job(factory, job_id)
    assert (job.status, job.attempt) == ("failed", 1)
    assert job.error is not None and job.error.code == "non_finite_loss"
    assert job.error.epoch is not None and job.error.step >= 1
    assert job.model_path is None


def test_a_killed_child_is_requeued_and_resumes_from_its_checkpoint(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask, settings: Settings
) -> None:
    spec = xor_mlp(epochs=400, checkpoint_every_epochs=20, log_every_steps=1)
    job_id = make_job(spec)
    with _task_in_background(run_task, job_id) as outcome:
        wait_for(
            lambda: (read_job(factory, job_id).checkpoint_epoch or 0) >= 20,
            60,
            interval=0.005,
            what="a checkpoint",
        )
        (child,) = _training_children()
        os.kill(child, signal.SIGKILL)
    assert outcome["result"] == "requeued"
    first = read_job(factory, job_id)
    # A kill from outside is the platform's doing: the same attempt, one interruption.
    assert (first.status, first.attempt, first.platform_interruptions, first.worker) == (
        "queued",
        1,
        1,
        None,
    )
    checkpoints = sorted((settings.job_dir(job_id) / "checkpoints").glob("ckpt-*.npz"))
    newest_file = int(checkpoints[-1].stem.removeprefix("ckpt-"))  # epochs done
    # It resumes from the checkpoint the database recorded (with every metric up to it),
    # not from a newer file the killed child wrote but did not get to record.
    resumes_at = first.checkpoint_epoch or 0
    assert 20 <= resumes_at <= newest_file < 400
    messages = list((settings.broker_dir / "queue").glob("*.cpu.msg"))
    assert len(messages) == 1  # sent back to its queue
    second_start = utcnow()

    assert run_task(job_id) == "finished"

    job = read_job(factory, job_id)
    assert (job.status, job.attempt, job.platform_interruptions) == ("succeeded", 1, 1), job.error
    points = _metrics(factory, job_id)
    rewritten = [p for p in points if p.time >= second_start]
    assert min(p.epoch for p in rewritten) == resumes_at > 0  # the first epoch it ran again
    losses = [p for p in points if p.name == "loss"]
    assert [p.step for p in losses] == list(range(1, 401))  # no gaps, no duplicates
    assert len({(p.name, p.step) for p in points}) == len(points)


def test_a_cpu_worker_never_claims_a_gpu_job(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask
) -> None:
    # The message could only come here misrouted; the job must wait for a GPU worker.
    job_id = make_job(queue="gpu", device="gpu")

    assert run_task(job_id) == "not_queued"

    job = read_job(factory, job_id)
    assert (job.status, job.worker, job.attempt) == ("queued", None, 1)


def test_a_repeated_spec_in_a_new_process_compiles_nothing(
    factory: sessionmaker[Session], make_job: MakeJob, run_task: RunTask, settings: Settings
) -> None:
    cache = settings.data_dir / "xla-cache"
    spec = xor_mlp(epochs=30)
    first = make_job(spec)
    assert run_task(first) == "finished"
    compiled = {path.name for path in cache.iterdir()}
    assert compiled  # the first process compiled its programs into the cache

    # The same spec, another seed and learning rate: a new process, only cache hits.
    again = {**spec, "optimizer": {"type": "adam", "learning_rate": 0.02}}
    again["training"] = {**spec["training"], "seed": 7}
    second = make_job(again)
    assert run_task(second) == "finished"
    assert {path.name for path in cache.iterdir()} == compiled
    timings = [read_job(factory, job_id).timings for job_id in (first, second)]
    assert all(t.compile is not None for t in timings)
    # Side by side in one run: a cache hit is cheaper than compiling.
    assert timings[1].compile < timings[0].compile  # type: ignore[operator]
