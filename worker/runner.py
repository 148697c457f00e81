"""Train one claimed job (in the training process) and write its outcome.

`run_claimed_job` re-reads the row, opens the dataset(s), starts from `init_from`'s model
when asked, and calls `core.train.train` with the job's checkpoint directory (resuming
from the newest checkpoint of an earlier attempt) and a `JobRecorder`. Then one terminal
write, conditional on still owning the job:

- completed (or stopped early): the model exported atomically to
  `<job dir>/model.safetensors`, an artifact row, `model_path`, the summary → `succeeded`;
- stopped by a cancel → `cancelled`;
- errors → `failed` with API.md's codes: `invalid_spec` (SpecError, a dataset that cannot
  be opened, an unusable `init_from`), the engine's `TrainingError` codes
  (`non_finite_loss`, `timeout`), `out_of_memory`, else `internal`. These are never
  retried: the job ends here with its attempt unchanged.
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import Any

import jax
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.dataset_store import UnknownDatasetError, open_dataset
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.models import Artifact, Job
from app.domain.db.types import utcnow
from app.domain.leases import finish_job, owned, update_owned_job
from core.data import Dataset
from core.errors import DatasetError, SpecError, TrainingError
from core.export import import_model, write_model
from core.runtime import device_description, enable_compilation_cache
from core.spec import JobSpec, parse_spec
from core.train import TrainResult, train
from worker.recorder import JobRecorder

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"


def run_claimed_job(settings: Settings, job_id: str, *, worker: str, attempt: int) -> str:
    """Train the job `worker` claimed for `attempt`; returns the status it wrote (or
    `not_ours` when the job was taken away before or during the run)."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    recorder = JobRecorder(
        factory, job_id, worker=worker, attempt=attempt, data_dir=settings.data_dir
    )
    try:
        return _run(settings, factory, recorder)
    finally:
        engine.dispose()


def _run(settings: Settings, factory: sessionmaker[Session], recorder: JobRecorder) -> str:
    with transaction(factory) as session:
        job = session.scalars(
            select(Job).where(*owned(recorder.job_id, recorder.worker, recorder.attempt))
        ).first()
    if job is None:
        log.info("job %s is not ours to run (attempt %d)", recorder.job_id, recorder.attempt)
        return "not_ours"
    try:
        spec = parse_spec(job.spec)
        if settings.compilation_cache:
            enable_compilation_cache(settings.data_dir / "xla-cache")
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
            checkpoint_dir=settings.job_dir(job.id) / "checkpoints",
            resume=True,
            init_params=init_params,
        )
        recorder.flush()
        if recorder.lost:
            return "not_ours"
        if result.stop_reason == "cancelled":
            return _finish(factory, recorder, "cancelled", eta_seconds=None)
        return _succeed(settings, factory, recorder, spec, dataset, result)
    except Exception as exc:
        recorder.flush()
        return _fail(factory, recorder, exc)


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
        params, _state, _spec = import_model(settings.data_dir / source.model_path)
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
) -> str:
    path = settings.job_dir(recorder.job_id) / MODEL_FILE
    write_model(path, result.params, result.model_state, spec, input_shape=dataset.info.input_shape)
    with transaction(factory) as session:
        finished = finish_job(
            session,
            recorder.job_id,
            worker=recorder.worker,
            attempt=recorder.attempt,
            status="succeeded",
            now=utcnow(),
            summary=job_summary(result),
            model_path=recorder.relative(path),
            progress=_final_progress(spec, recorder, result),
            eta_seconds=0.0,
        )
        if finished:
            session.add(
                Artifact(
                    job_id=recorder.job_id,
                    kind="model",
                    path=recorder.relative(path),
                    epoch=len(result.history),
                    step=result.steps_completed,
                    size_bytes=path.stat().st_size,
                )
            )
    return "succeeded" if finished else "not_ours"


def _final_progress(spec: JobSpec, recorder: JobRecorder, result: TrainResult) -> dict[str, Any]:
    last = recorder.progress
    return {
        "epoch": len(result.history),
        "epochs": spec.training.epochs,
        "step": result.steps_completed,
        "steps": last.steps if last is not None else result.steps_completed,
        "fraction": 1.0,
    }


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


def _fail(factory: sessionmaker[Session], recorder: JobRecorder, exc: Exception) -> str:
    error = job_error(exc)
    if error["code"] == "internal":
        log.exception("job %s failed unexpectedly", recorder.job_id)
    else:
        log.info("job %s failed: %s", recorder.job_id, error["message"])
    if recorder.progress is not None:
        error["epoch"] = recorder.progress.epoch if error.get("epoch") is None else error["epoch"]
        error["step"] = recorder.progress.step if error.get("step") is None else error["step"]
    return _finish(factory, recorder, "failed", error=error, eta_seconds=None)


def job_error(exc: BaseException) -> dict[str, Any]:
    """API.md's `error` body for an exception raised while preparing or training."""
    if isinstance(exc, TrainingError):
        return exc.as_dict()
    if isinstance(exc, SpecError):
        return {"code": "invalid_spec", "message": str(exc), "epoch": None, "step": None}
    if is_out_of_memory(exc):
        message = (
            f"out of memory: {exc}. Lower training.batch_size or the model's size, or run "
            "on a device with more memory"
        )
        return {"code": "out_of_memory", "message": message, "epoch": None, "step": None}
    message = f"{type(exc).__name__}: {exc}"
    return {"code": "internal", "message": message, "epoch": None, "step": None}


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or XLA's RESOURCE_EXHAUSTED (raised as a runtime error with that text)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


def _finish(
    factory: sessionmaker[Session], recorder: JobRecorder, status: str, **values: Any
) -> str:
    with transaction(factory) as session:
        finished = finish_job(
            session,
            recorder.job_id,
            worker=recorder.worker,
            attempt=recorder.attempt,
            status=status,
            now=utcnow(),
            **values,
        )
    return status if finished else "not_ours"
