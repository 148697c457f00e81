"""Sweep trials through the real task and training process: ASHA stops a losing trial at
its first rung (`stop_reason: "pruned"`, a model kept), and the sweep ends with the best."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Sweep
from app.domain.db.types import utcnow
from app.domain.status import JobStatus, SweepStatus
from app.domain.sweeps import controller
from app.domain.sweeps.definition import SweepDefinition
from app.domain.sweeps.sampling import suggest
from core.spec import parse_spec
from tests.specs import mlp
from tests.worker.conftest import read_job
from tests.worker.test_run_job import RunTask

GOOD, BAD = 0.05, 1e-6  # Adam learning rates on iris


def _definition(seed: int) -> SweepDefinition:
    spec = mlp(
        "builtin:iris",
        [16, 3],
        metrics=["accuracy"],
        validation={"split": 0.2},
        optimizer={"type": "adam", "learning_rate": GOOD},
        training={"epochs": 10, "batch_size": 16},
        device="cpu",
    )
    return SweepDefinition.model_validate(
        {
            "spec": parse_spec(spec).model_dump(mode="json"),
            "parameters": {"optimizer.learning_rate": {"values": [GOOD, BAD]}},
            "method": "grid",
            "metric": {"name": "val_loss", "goal": "minimize"},
            "max_concurrent": 1,
            "early_termination": {"type": "asha", "min_epochs": 1, "reduction_factor": 2},
            "seed": seed,
        }
    )


def _good_first() -> SweepDefinition:
    """A seed whose grid order tries the good rate first, so the bad one meets it at the
    rung (the grid's order is fixed by the seed)."""
    for seed in range(50):
        definition = _definition(seed)
        if suggest(definition, [], 0).params["optimizer.learning_rate"] == GOOD:
            return definition
    raise AssertionError("no seed puts the good rate first")


def _queued_trial(factory: sessionmaker[Session], sweep_id: str) -> str | None:
    with transaction(factory) as session:
        return session.scalar(
            select(Job.id).where(Job.sweep_id == sweep_id, Job.status == JobStatus.QUEUED)
        )


def test_asha_prunes_the_losing_trial_at_its_first_rung(
    factory: sessionmaker[Session], tenant_id: str, settings: Settings, run_task: RunTask
) -> None:
    definition = _good_first()
    sent: list[str] = []

    def send(job_id: str, queue: str) -> None:
        sent.append(job_id)

    with transaction(factory) as session:
        sweep = Sweep(
            tenant_id=tenant_id,
            name="iris-asha",
            status=SweepStatus.RUNNING,
            definition=definition.model_dump(mode="json"),
            created_at=utcnow(),
        )
        session.add(sweep)
        session.flush()
        sweep_id = sweep.id
    controller.advance(factory, sweep_id, send, settings)
    assert len(sent) == 1

    # Each run of the task makes the next trial when its own has ended (and sends it to
    # the broker, which this test does not consume: it runs the queued trial itself).
    ran = 0
    while queued := _queued_trial(factory, sweep_id):
        assert run_task(queued) == "finished"
        ran += 1
    assert ran == 2
    with transaction(factory) as session:
        trials = session.scalars(
            select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_number)
        ).all()
        finished = session.get(Sweep, sweep_id)
        assert finished is not None and finished.status == SweepStatus.SUCCEEDED

    good, bad = (read_job(factory, trial.id) for trial in trials)
    summary: dict[str, Any] = bad.summary or {}
    assert (good.trial_params, bad.trial_params) == (
        {"optimizer.learning_rate": GOOD},
        {"optimizer.learning_rate": BAD},
    )
    assert good.status == bad.status == JobStatus.SUCCEEDED
    assert (good.summary or {})["stop_reason"] == "completed"
    assert summary["stop_reason"] == "pruned" and summary["epochs_completed"] == 1
    assert bad.model_path is not None  # a pruned trial keeps the model it had
    assert controller.trial_counts(trials)["pruned"] == 1
