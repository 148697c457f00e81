"""Train one claimed job (in the training process) and write its outcome.

`run_claimed_job` re-reads the row, opens the dataset(s), starts from `init_from`'s model
when asked, and calls `core.train.train` with the job's checkpoint directory (resuming
from the checkpoint an earlier attempt recorded) and a `JobRecorder`. Then one terminal
write, conditional on still owning the job:

- completed (or stopped early): the model exported atomically to
  `<job dir>/model.safetensors` and stored (worker.stored_files: with object storage,
  uploaded under a new key), an artifact row, `model_path`, the summary → `succeeded`;
- stopped by a cancel → `cancelled`;
- suspended (the training process was asked to stop: its worker is shutting down) →
  nothing: the checkpoint written at the stop is recorded, and the supervisor hands the
  job back;
- errors → `failed` with API.md's codes: `invalid_spec` (SpecError, a dataset that cannot
  be opened, an unusable `init_from`), the engine's `TrainingError` codes
  (`non_finite_loss`, `timeout`), `out_of_memory`, `storage_full` (no space left in the
  data directory: the message names the file, relative to it), else `internal`. These
  are never retried: the job ends here with its attempt unchanged.

The last metrics and the terminal write are retried while the database is down or
restarting, for up to `database_retry_seconds`; a database that stays away longer is
not the job's fault, so nothing is written and the process exits with the error (the
supervisor re-queues the job once it reaches the database again).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import threading
from pathlib import Path
from typing import Any

import jax
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.dataset_store import UnknownDatasetError, open_dataset
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.models import Job
from app.domain.db.outage import is_database_unavailable
from app.domain.db.types import utcnow
from app.domain.leases import finish_job, owned, update_owned_job
from app.domain.status import ArtifactKind, JobStatus
from app.domain.storage import storage_for
from app.domain.sweeps.judge import TrialJudge
from app.domain.timings import Timeline
from app.domain.values import ErrorCode, JobError, JobProgress, no_space_left
from core.data import Dataset, load_builtin
from core.errors import DatasetError, SpecError
from core.export import import_model, write_model
from core.runtime import device_description, enable_compilation_cache
from core.spec import JobSpec, parse_spec
from core.train import StopReason, TrainResult, train
from worker.db import retry_while_unavailable
from worker.recorder import JobRecorder
from worker.stored_files import JobFiles

log = logging.getLogger(__name__)


# What a training process trains before its job arrives: a few full-batch epochs of a
# tiny network, with a metric and a validation split, so the job's own tracing and
# lowering find JAX's caches, lazily imported modules and the XLA client warm (measured:
# the iris MLP's first job in a process 0.36 s after it, 0.45 s after a one-op program).
WARM_UP_SPEC = {
    "dataset": "builtin:xor",
    "model": {
        "layers": [
            {"type": "dense", "units": 3, "activation": "tanh"},
            {"type": "dense", "units": 2},
        ]
    },
    "loss": "cross_entropy",
    "metrics": ["accuracy"],
    "validation": {"split": 0.25},
    "training": {"epochs": 2, "batch_size": "full"},
}


def get_ready(settings: Settings) -> None:
    """Everything a training process can do before it knows its job: open the compilation
    cache, start the device's backend (GPU processes were told not to preallocate), and
    train WARM_UP_SPEC once."""
    if settings.compilation_cache:
        enable_compilation_cache(settings.data_dir / "xla-cache")
    try:
        # scikit-learn, which builds the iris and digits sets, takes ~0.8 s to import.
        from sklearn import datasets  # noqa: F401

        train(parse_spec(WARM_UP_SPEC), load_builtin("xor"))
    except Exception:  # only a head start: the job itself reports what is wrong
        log.warning("the warm-up run failed; going on without it", exc_info=True)
    log.info("training process ready on %s", device_description())


def run_claimed_job(
    settings: Settings,
    job_id: str,
    *,
    worker: str,
    attempt: int,
    suspend: threading.Event | None = None,
) -> JobStatus | None:
    """Train the job `worker` claimed for `attempt`; returns the status it wrote, or None
    when the job was taken away before or during the run, or suspended once `suspend` was
    set (nothing written but the checkpoint)."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    recorder = JobRecorder(
        factory,
        job_id,
        worker=worker,
        attempt=attempt,
        files=JobFiles(settings, job_id),
        suspend=suspend,
        retry_seconds=settings.database_retry_seconds,
    )
    recorder.files.clean_scratch()  # what an earlier run on this host left when killed
    try:
        return _run(settings, factory, recorder)
    finally:
        recorder.files.clean_scratch()  # object storage: this host's working copies
        engine.dispose()


def _run(
    settings: Settings, factory: sessionmaker[Session], recorder: JobRecorder
) -> JobStatus | None:
    with transaction(factory) as session:
        job = session.scalars(
            select(Job).where(*owned(recorder.job_id, recorder.worker, recorder.attempt))
        ).first()
        if job is not None:
            recorder.judge = TrialJudge.for_job(session, job)
    if job is None:
        log.info("job %s is not ours to run (attempt %d)", recorder.job_id, recorder.attempt)
        return None
    recorder.timeline = Timeline(
        queued_from=job.enqueued_at or job.created_at, claimed_at=job.claimed_at or utcnow()
    )
    try:
        spec = parse_spec(job.spec)
        _record_device(factory, recorder)
        with transaction(factory) as session:
            dataset = _open(session, settings, job.tenant_id, spec.dataset, ("dataset",))
            validation = None
            if spec.validation is not None and spec.validation.dataset is not None:
                loc = ("validation", "dataset")
                validation = _open(session, settings, job.tenant_id, spec.validation.dataset, loc)
            init_params = _init_params(session, settings, job.tenant_id, spec)
        result = train(
            spec,
            dataset,
            validation_data=validation,
            callbacks=recorder,
            checkpoint_dir=recorder.files.checkpoint_dir,
            resume_from=_recorded_checkpoint(recorder.files, job),
            init_params=init_params,
        )
        recorder.flush_until_written()
        if recorder.lost:
            return None
        if result.stop_reason == StopReason.SUSPENDED:
            log.info("job %s suspended at epoch %d", recorder.job_id, len(result.history))
            return None
        if result.stop_reason == StopReason.CANCELLED:
            return _finish(factory, recorder, JobStatus.CANCELLED, eta_seconds=None)
        return _succeed(settings, factory, recorder, spec, dataset, result)
    except Exception as exc:
        if is_database_unavailable(exc):
            # Not the job's fault: leave it running; once the database is back the
            # supervisor sees this process gone and re-queues the job (a new attempt).
            log.warning("job %s: the database stayed unavailable; giving the job up", job.id)
            raise
        recorder.flush_until_written()
        return _fail(settings, factory, recorder, exc)


def _recorded_checkpoint(files: JobFiles, job: Job) -> Path | None:
    """The checkpoint the database says is durable, not the newest file on disk.

    The row was written in the same transaction as every metric up to it, so resuming
    from it rewrites exactly the epochs the database lacks. A newer file that an earlier
    attempt wrote but died before recording would skip epochs whose metrics were never
    stored.
    """
    if job.checkpoint_path is None:
        return None
    return files.local(job.checkpoint_path)  # with object storage: fetched from the bucket


def _open(
    session: Session, settings: Settings, tenant_id: str, ref: str, loc: tuple[str, ...]
) -> Dataset:
    try:
        return open_dataset(session, settings, tenant_id, ref)
    except (UnknownDatasetError, DatasetError) as exc:
        raise SpecError.at(loc, f"dataset {ref!r} cannot be opened: {exc}") from exc


def _init_params(session: Session, settings: Settings, tenant_id: str, spec: JobSpec) -> Any:
    """The trained parameters of `init_from.job` (the same tenant's job), or None."""
    if spec.init_from is None:
        return None
    loc = ("init_from", "job")
    source = session.scalars(
        select(Job).where(Job.id == spec.init_from.job, Job.tenant_id == tenant_id)
    ).first()
    if source is None or source.model_path is None:
        raise SpecError.at(loc, f"job {spec.init_from.job!r} has no trained model to start from")
    try:
        params, _state, _spec = import_model(storage_for(settings).local_path(source.model_path))
    except (OSError, ValueError) as exc:
        raise SpecError.at(loc, f"the model of job {source.id} cannot be used: {exc}") from exc
    return params


def _record_device(factory: sessionmaker[Session], recorder: JobRecorder) -> None:
    """The device kind JAX actually got (a `gpu` job on a machine without one says `cpu`)."""
    device = "cpu" if jax.default_backend() == "cpu" else "gpu"
    with transaction(factory) as session:
        update_owned_job(
            session,
            recorder.job_id,
            worker=recorder.worker,
            attempt=recorder.attempt,
            device=device,
        )


def _succeed(
    settings: Settings,
    factory: sessionmaker[Session],
    recorder: JobRecorder,
    spec: JobSpec,
    dataset: Dataset,
    result: TrainResult,
) -> JobStatus | None:
    path = recorder.files.model_file
    write_model(path, result.params, result.model_state, spec, input_shape=dataset.info.input_shape)
    key = recorder.files.store_file(path)  # uploaded before the row names it
    return _finish(
        factory,
        recorder,
        JobStatus.SUCCEEDED,
        summary=job_summary(result),
        model_path=key,
        progress=_final_progress(spec, recorder, result),
        eta_seconds=0.0,
        artifact=(key, path, len(result.history), result.steps_completed),
    )


def _final_progress(spec: JobSpec, recorder: JobRecorder, result: TrainResult) -> JobProgress:
    last = recorder.progress
    return JobProgress(
        epoch=len(result.history),
        epochs=spec.training.epochs,
        step=result.steps_completed,
        steps=last.steps if last is not None else result.steps_completed,
        fraction=1.0,
    )


def job_summary(result: TrainResult) -> dict[str, Any]:
    """The engine's summary (last epoch's metrics, best_epoch) with JSON-safe numbers,
    the throughput and why training stopped."""
    summary: dict[str, Any] = {name: _json_number(value) for name, value in result.summary.items()}
    rates = [
        epoch["samples_per_second"] for epoch in result.history if "samples_per_second" in epoch
    ]
    if len(rates) > 1:
        rates = rates[1:]  # the first epoch's time includes compiling the training step
    summary["samples_per_second"] = _json_number(statistics.median(rates)) if rates else None
    summary["device"] = device_description()
    summary["stop_reason"] = result.stop_reason
    summary["epochs_completed"] = len(result.history)
    return summary


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fail(
    settings: Settings, factory: sessionmaker[Session], recorder: JobRecorder, exc: Exception
) -> JobStatus | None:
    where = None if recorder.progress is None else JobProgress.of(recorder.progress)
    full = no_space_left(exc)
    if full is not None and full.filename is not None:
        path = _in_data_dir(settings, Path(os.fsdecode(full.filename)))
        error = JobError.storage_full(path, where)
    else:
        error = JobError.of(exc, where)
    if error.code == ErrorCode.INTERNAL:
        log.exception("job %s failed unexpectedly", recorder.job_id)
    else:
        log.info("job %s failed: %s", recorder.job_id, error.message)
    return _finish(factory, recorder, JobStatus.FAILED, error=error, eta_seconds=None)


def _finish(
    factory: sessionmaker[Session],
    recorder: JobRecorder,
    status: JobStatus,
    *,
    artifact: tuple[str, Path, int, int] | None = None,
    **values: Any,
) -> JobStatus | None:
    """The terminal write (and the model's artifact row, `(key, local path, epoch, step)`),
    conditional on still owning the job; None when it was taken away."""
    now = utcnow()
    if recorder.timeline is not None:
        values.update(recorder.timeline.columns(finished_at=now))

    def write() -> bool:
        with transaction(factory) as session:
            finished = finish_job(
                session,
                recorder.job_id,
                worker=recorder.worker,
                attempt=recorder.attempt,
                status=status,
                now=now,
                **values,
            )
            if finished and artifact is not None:
                session.add(recorder.artifact(ArtifactKind.MODEL, *artifact))
        return finished

    # A retry after a commit whose answer was lost finds the job finished: not ours.
    finished = retry_while_unavailable(
        write, seconds=recorder.retry_seconds, what=f"job {recorder.job_id}: {status}"
    )
    return status if finished else None


def _in_data_dir(settings: Settings, path: Path) -> str:
    """`path` as the user may see it: relative to the data directory (never the server's
    own layout), or only its name when it lies elsewhere."""
    try:
        return path.resolve().relative_to(settings.data_dir.resolve()).as_posix()
    except ValueError:
        return path.name
