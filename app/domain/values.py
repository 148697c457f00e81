"""The value types a job row holds and its public body shows: progress and error.

Each is built in one place: `JobProgress.of` from the engine's progress, `JobError.of`
from whatever stopped a run (the worker) and `JobError.worker_lost` (the lease keeper).
They are stored as JSON (`app.domain.db.types.ModelJSON`) and read back as these types.
"""

from __future__ import annotations

import errno
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import SpecError, TrainingError

if TYPE_CHECKING:  # core.train imports JAX, which the Celery main process must never load
    from core.train import Progress


class ErrorCode(StrEnum):
    """API.md's job error codes."""

    INVALID_SPEC = "invalid_spec"
    NON_FINITE_LOSS = "non_finite_loss"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    STORAGE_FULL = "storage_full"
    INTERNAL = "internal"


class JobProgress(BaseModel):
    """How far a running job is; `epoch` is 0-based and equals `epochs` when done."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    epochs: int
    step: int
    steps: int
    fraction: float = Field(description="step / steps, in [0, 1]")

    @classmethod
    def of(cls, progress: Progress) -> JobProgress:
        """The engine's progress report as the job shows it."""
        return cls(
            epoch=progress.epoch,
            epochs=progress.epochs,
            step=progress.step,
            steps=progress.steps,
            fraction=progress.fraction,
        )


class TrialOfJob(BaseModel):
    """A job's place in a sweep: its trial number and the values it was given."""

    model_config = ConfigDict(frozen=True)

    number: int
    params: dict[str, Any] = Field(description="the sampled values, by path into the spec")


class JobError(BaseModel):
    """Why a job failed; `epoch` and `step` say where, when known."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str
    epoch: int | None = None
    step: int | None = None

    @classmethod
    def of(cls, exc: BaseException, where: JobProgress | None = None) -> JobError:
        """The error for an exception raised while preparing or training a job; where the
        exception does not say, `where` (the last progress seen) gives epoch and step."""
        if isinstance(exc, TrainingError):
            code, message = ErrorCode(exc.code), exc.message
        elif isinstance(exc, SpecError):
            code, message = ErrorCode.INVALID_SPEC, str(exc)
        elif no_space_left(exc) is not None:
            code = ErrorCode.STORAGE_FULL
            message = f"no space left on device in the data directory. {FREE_SPACE}"
        elif is_out_of_memory(exc):
            code = ErrorCode.OUT_OF_MEMORY
            message = (
                f"out of memory: {exc}. Lower training.batch_size or the model's size, or run "
                "on a device with more memory"
            )
        else:
            code, message = ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        epoch, step = (exc.epoch, exc.step) if isinstance(exc, TrainingError) else (None, None)
        if where is not None:
            epoch = where.epoch if epoch is None else epoch
            step = where.step if step is None else step
        return cls(code=code, message=message, epoch=epoch, step=step)

    @classmethod
    def storage_full(cls, path: str, where: JobProgress | None) -> JobError:
        """A write of the job's files (`path`, relative to the data directory) found the
        data directory's disk full; what was written before it stays intact."""
        return cls(
            code=ErrorCode.STORAGE_FULL,
            message=f"no space left on device in the data directory while writing {path}. "
            f"{FREE_SPACE}; the checkpoints written before it are intact",
            epoch=None if where is None else where.epoch,
            step=None if where is None else where.step,
        )

    @classmethod
    def worker_lost(cls, message: str, where: JobProgress | None) -> JobError:
        return cls(
            code=ErrorCode.WORKER_LOST,
            message=message,
            epoch=None if where is None else where.epoch,
            step=None if where is None else where.step,
        )


FREE_SPACE = (
    "Free space in the data directory (old jobs' models and checkpoints, unused datasets) "
    "or move it to a larger volume, then submit the job again"
)
# errno values for a full disk, or a user's or a filesystem's quota used up.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def no_space_left(exc: BaseException) -> OSError | None:
    """The "no space left on device" error that `exc` is, or was raised from."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of causes is short; never loop on a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or XLA's RESOURCE_EXHAUSTED (raised as a runtime error with that text)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text
