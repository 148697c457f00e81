"""What the sweeps API shows: the Sweep body of API.md, sweep lists and trial rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.domain.status import JobStatus, SweepStatus
from app.domain.sweeps.definition import EarlyTermination, Metric, SweepDefinition
from app.schemas.common import Page, PageQuery
from core.spec.examples import DIGITS_CNN

SWEEP_EXAMPLE: dict[str, Any] = {
    "name": "digits-lr",
    "spec": DIGITS_CNN,
    "parameters": {
        "optimizer.learning_rate": {"distribution": "log_uniform", "min": 0.0001, "max": 0.1},
        "model.layers[3].units": {"values": [32, 64, 128]},
        "training.batch_size": {"values": [32, 64]},
    },
    "method": "random",
    "metric": {"name": "val_accuracy", "goal": "maximize"},
    "max_trials": 24,
    "max_concurrent": 2,
    "early_termination": {"type": "asha", "min_epochs": 1, "reduction_factor": 3},
    "seed": 0,
}


class TrialCounts(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int = Field(description="finished without being pruned")
    pruned: int = Field(description="stopped early by the sweep's early termination")
    failed: int
    cancelled: int


class BestTrial(BaseModel):
    job_id: str
    number: int
    value: float
    params: dict[str, Any]


class SweepPublic(BaseModel):
    """A hyperparameter search (API.md, "Sweep body")."""

    id: str
    name: str
    status: SweepStatus
    created_at: datetime
    finished_at: datetime | None
    trials: TrialCounts
    best: BestTrial | None = Field(description="the finished trial with the best metric value")
    epochs_used: int = Field(description="epochs trained over all trials so far")
    spec: dict[str, Any] = Field(description="the base JobSpec, with defaults filled in")
    parameters: dict[str, Any]
    method: str
    metric: Metric
    early_termination: EarlyTermination | None
    max_trials: int
    max_concurrent: int
    seed: int


class SweepsPublic(Page[SweepPublic]):
    """A page of sweeps, newest first."""


class TrialPublic(BaseModel):
    """One trial of a sweep: its job and how it did."""

    number: int
    job_id: str
    status: JobStatus
    pruned: bool = Field(description="stopped early by the sweep's early termination")
    params: dict[str, Any]
    value: float | None = Field(description="the metric's final value; null until it ends")
    epochs: int = Field(description="epochs it has trained")


class TrialsPublic(BaseModel):
    sweep_id: str
    data: list[TrialPublic]


def sweep_create_schema() -> dict[str, Any]:
    """The JSON Schema of `POST /v1/sweeps`' body, its `$defs` for the OpenAPI components.

    The route validates the body itself (`loc`s into it), so the schema is documentation:
    the definition's fields, `spec` a JobSpec, and `max_trials` required unless a grid.
    """
    schema = SweepDefinition.model_json_schema(ref_template="#/components/schemas/{model}")
    schema["properties"]["spec"] = {
        "$ref": "#/components/schemas/JobSpec",
        "description": "the base JobSpec that each trial's values are laid over",
    }
    schema["anyOf"] = [
        {"required": ["max_trials"]},
        {"required": ["method"], "properties": {"method": {"const": "grid"}}},
    ]
    schema["title"] = "SweepCreate"
    schema["description"] = 'A hyperparameter sweep (API.md, "Sweeps").'
    return schema


class SweepsQuery(PageQuery):
    """`GET /v1/sweeps` filters, with `limit` and `cursor`."""

    status: SweepStatus | None = Field(None, description="only sweeps in this status")
