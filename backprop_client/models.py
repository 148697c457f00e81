"""What the API answers, as small dataclasses: `Job`, `Dataset`, `Metrics`, `Prediction`.

Each keeps the whole JSON body in `raw`, so fields added to the API later are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """The statuses the API documents; `Job.status` stays a plain string, so a status
    added to the API later still reads."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Progress:
    epoch: int
    epochs: int
    step: int
    steps: int
    fraction: float

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> Progress | None:
        if not body:
            return None
        return cls(
            int(body["epoch"]),
            int(body["epochs"]),
            int(body["step"]),
            int(body["steps"]),
            float(body["fraction"]),
        )


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    epoch: int | None = None
    step: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> JobError:
        """Only the known keys: an error field the API adds later must not break `Job`."""
        return cls(body["code"], body["message"], body.get("epoch"), body.get("step"))

    def __str__(self) -> str:
        where = ", ".join(
            f"{name} {value}"
            for name, value in (("epoch", self.epoch), ("step", self.step))
            if value is not None
        )
        return f"{self.code}: {self.message}" + (f" ({where})" if where else "")


@dataclass(frozen=True)
class Job:
    """A training job (API.md, "Job body")."""

    id: str
    name: str
    status: str
    attempt: int  # 1 + the times the job's own training process crashed
    dataset: str
    device: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    queue_position: int | None
    progress: Progress | None
    eta_seconds: float | None
    summary: dict[str, Any] | None
    error: JobError | None
    spec: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)
    # Seconds per phase of the latest attempt (queued, startup, compile, training,
    # finalizing, total); a phase not reached yet is missing.
    timings: dict[str, float] = field(default_factory=dict)
    # Times the platform stopped it (a worker killed or lost) and it was resumed.
    platform_interruptions: int = 0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        error = body.get("error")
        return cls(
            id=body["id"],
            name=body["name"],
            status=body["status"],
            attempt=body.get("attempt", 1),
            platform_interruptions=body.get("platform_interruptions", 0),
            dataset=body.get("dataset", ""),
            device=body.get("device", ""),
            created_at=body.get("created_at", ""),
            started_at=body.get("started_at"),
            finished_at=body.get("finished_at"),
            queue_position=body.get("queue_position"),
            progress=Progress.from_json(body.get("progress")),
            eta_seconds=body.get("eta_seconds"),
            summary=body.get("summary"),
            error=JobError.from_json(error) if error else None,
            spec=body.get("spec") or {},
            raw=body,
            timings={k: v for k, v in (body.get("timings") or {}).items() if v is not None},
        )


@dataclass(frozen=True)
class Dataset:
    """An uploaded or built-in dataset (API.md, "Dataset body")."""

    id: str
    name: str
    format: str
    task: str
    num_examples: int
    input_shape: list[int]
    target_shape: list[int]
    num_classes: int | None
    class_names: list[str] | None
    size_bytes: int
    created_at: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Dataset:
        return cls(
            id=body["id"],
            name=body["name"],
            format=body["format"],
            task=body["task"],
            num_examples=body["num_examples"],
            input_shape=list(body["input_shape"]),
            target_shape=list(body["target_shape"]),
            num_classes=body.get("num_classes"),
            class_names=body.get("class_names"),
            size_bytes=body.get("size_bytes", 0),
            created_at=body.get("created_at", ""),
            raw=body,
        )


@dataclass(frozen=True)
class Series:
    """One metric as parallel lists, ordered by step; a value is None where not finite."""

    name: str
    step: list[int]
    epoch: list[int]
    value: list[float | None]
    time: list[str]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Series:
        return cls(
            name=body["name"],
            step=list(body["step"]),
            epoch=list(body["epoch"]),
            value=list(body["value"]),
            time=list(body["time"]),
        )

    @property
    def last(self) -> float | None:
        return self.value[-1] if self.value else None


@dataclass(frozen=True)
class Metrics:
    """A job's metric series by name, and the same as columns (one row per step)."""

    job_id: str
    series: dict[str, Series]

    def __getitem__(self, name: str) -> Series:
        return self.series[name]

    def __contains__(self, name: object) -> bool:
        return name in self.series

    @property
    def names(self) -> list[str]:
        return list(self.series)

    def columns(self, names: list[str] | None = None) -> dict[str, list[Any]]:
        """`{"step": [...], "epoch": [...], <series name>: [...]}`: one row per step at which
        any of the chosen series (default all) has a point, None where a series has none."""
        chosen = [self.series[name] for name in (names or self.names)]
        epoch_at: dict[int, int] = {}
        for series in chosen:
            epoch_at.update(zip(series.step, series.epoch, strict=True))
        steps = sorted(epoch_at)
        table: dict[str, list[Any]] = {"step": steps, "epoch": [epoch_at[s] for s in steps]}
        for series in chosen:
            at_step = dict(zip(series.step, series.value, strict=True))
            table[series.name] = [at_step.get(step) for step in steps]
        return table

    def to_pandas(self, names: list[str] | None = None) -> Any:
        """`columns()` as a `pandas.DataFrame` indexed by step (needs pandas installed)."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError("Metrics.to_pandas needs pandas: pip install pandas") from error
        return pandas.DataFrame(self.columns(names)).set_index("step")

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Metrics:
        series = (Series.from_json(item) for item in body["series"])
        return cls(body["job_id"], {item.name: item for item in series})


@dataclass(frozen=True)
class Prediction:
    """The model's outputs for each input, and the predicted class for classification."""

    outputs: list[Any]
    classes: list[int] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Prediction:
        return cls(body["outputs"], body.get("classes"), body)


class SweepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: its job, its sampled values and how it did."""

    number: int
    job_id: str
    status: str
    pruned: bool
    params: dict[str, Any]
    value: float | None
    epochs: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Trial:
        return cls(
            number=int(body["number"]),
            job_id=body["job_id"],
            status=body["status"],
            pruned=bool(body.get("pruned", False)),
            params=dict(body.get("params") or {}),
            value=body.get("value"),
            epochs=int(body.get("epochs", 0)),
            raw=body,
        )

    @property
    def shown_status(self) -> str:
        """The status as a person reads it: a pruned trial is `pruned`, not `succeeded`."""
        return "pruned" if self.pruned else self.status


@dataclass(frozen=True)
class Sweep:
    """A hyperparameter search (API.md, "Sweep body")."""

    id: str
    name: str
    status: str
    trials: dict[str, int]  # total, queued, running, succeeded, pruned, failed, cancelled
    best: dict[str, Any] | None  # job_id, number, value, params
    epochs_used: int
    metric: dict[str, str]  # name, goal
    method: str
    max_trials: int
    max_concurrent: int
    created_at: str
    finished_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status != SweepStatus.RUNNING

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Sweep:
        return cls(
            id=body["id"],
            name=body["name"],
            status=body["status"],
            trials=dict(body.get("trials") or {}),
            best=body.get("best"),
            epochs_used=int(body.get("epochs_used", 0)),
            metric=dict(body.get("metric") or {}),
            method=body.get("method", ""),
            max_trials=int(body.get("max_trials", 0)),
            max_concurrent=int(body.get("max_concurrent", 0)),
            created_at=body.get("created_at", ""),
            finished_at=body.get("finished_at"),
            raw=body,
        )
