"""Where a job's time went (API.md "Job timings"): seconds per phase of its latest attempt.

The phases follow each other without gaps, so they add up to the total:

    queued      created (or re-queued) → claimed by a worker slot
    startup     claimed → the training process has the data on the device
    compile     → the first program is compiled (or read from the compilation cache)
    training    → the last step has run
    finalizing  → the terminal status is written (the model exported)

`total` is created (or re-queued) → terminal. Each is a float column of the job row, so
the Prometheus histograms are SQL counts; a phase not reached yet is null. A claim
starts a new attempt and clears every phase but `queued`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

PHASES = ("queued", "startup", "compile", "training", "finalizing")


def column(phase: str) -> str:
    """The job row's column for `phase` (or `total`)."""
    return f"{phase}_seconds"


class HasTimings(Protocol):
    queued_seconds: float | None
    startup_seconds: float | None
    compile_seconds: float | None
    training_seconds: float | None
    finalizing_seconds: float | None
    total_seconds: float | None


class JobTimings(BaseModel):
    """The job body's `timings`; null until the phase is reached."""

    model_config = ConfigDict(frozen=True)

    queued: float | None = None
    startup: float | None = None
    compile: float | None = None
    training: float | None = None
    finalizing: float | None = None
    total: float | None = None

    @classmethod
    def of(cls, job: HasTimings) -> JobTimings:
        return cls(**{name: getattr(job, column(name)) for name in (*PHASES, "total")})


def cleared_after_claim(queued_seconds: float) -> dict[str, Any]:
    """The timing columns a claim writes: the new attempt's wait, and nothing after it."""
    values: dict[str, Any] = {column(phase): None for phase in (*PHASES[1:], "total")}
    values[column("queued")] = queued_seconds
    return values


@dataclass
class Timeline:
    """The moments of one attempt, stamped as the training process reaches them, and the
    phase columns they give. Wall-clock datetimes: `claimed_at` comes from the database."""

    queued_from: datetime  # created_at, or when the job was last re-queued
    claimed_at: datetime
    moments: dict[str, datetime] = field(default_factory=dict)  # Phase value -> when

    def reached(self, moment: str, at: datetime) -> None:
        self.moments.setdefault(moment, at)

    def columns(self, finished_at: datetime | None = None) -> dict[str, float]:
        """The phases known so far (all of them, and the total, once `finished_at`)."""
        data = self.moments.get("data_on_device")
        program = self.moments.get("program_ready")
        done = self.moments.get("training_done")
        spans = {
            "startup": (self.claimed_at, data),
            "compile": (data, program),
            # A run with nothing to compile (0 epochs) trains from when its data arrived.
            "training": (program or data, done),
            "finalizing": (done, finished_at),
            "total": (self.queued_from, finished_at),
        }
        return {
            column(name): max((end - start).total_seconds(), 0.0)
            for name, (start, end) in spans.items()
            if start is not None and end is not None
        }
