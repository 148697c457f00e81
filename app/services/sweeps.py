"""Sweeps: submit (validate the whole body, store, make the first trials), read, list,
trials, cancel. The controller (`app.domain.sweeps.controller`) does the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.db.engine import reading
from app.domain.db.models import Job, Sweep
from app.domain.db.types import new_id, utcnow
from app.domain.errors import Conflict
from app.domain.quotas import check_storage_quota
from app.domain.status import SweepStatus
from app.domain.sweeps import controller
from app.domain.sweeps.definition import (
    SweepDefinition,
    extremes,
    parse_path,
    value_at,
    with_values,
)
from app.pagination import newest_first_page
from app.queue import JobQueue
from app.schemas.sweeps import (
    BestTrial,
    SweepPublic,
    SweepsPublic,
    SweepsQuery,
    TrialCounts,
    TrialPublic,
    TrialsPublic,
)
from app.services.job_checks import (
    check_datasets,
    check_init_from,
    check_limits,
    check_model_fits,
)
from app.services.jobs import find_job
from core.errors import ErrorItem, SpecError
from core.spec import JobSpec, monitorable_metrics, parse_spec

_TENANTS_SWEEP = select(Sweep).where(
    Sweep.id == bindparam("sweep_id"), Sweep.tenant_id == bindparam("tenant_id")
)


def find_sweep(session: Session, tenant_id: str, sweep_id: str) -> Sweep | None:
    """The tenant's sweep; another tenant's is None, like a missing one."""
    with reading(session):
        return session.scalars(
            _TENANTS_SWEEP, {"sweep_id": sweep_id, "tenant_id": tenant_id}
        ).first()


def submit_sweep(
    session: Session, queue: JobQueue, settings: Settings, tenant_id: str, body: Any
) -> SweepPublic:
    """Validate the sweep body whole (SpecError with `loc`s into it: 422), store the sweep
    and make its first `max_concurrent` trials."""
    definition = validate_sweep(session, settings, tenant_id, body)
    sweep_id = new_id()
    name = definition.name or f"sweep-{sweep_id[:8]}"
    sweep = Sweep(
        id=sweep_id,
        tenant_id=tenant_id,
        name=name,
        status=SweepStatus.RUNNING,
        definition=definition.model_dump(mode="json"),
        created_at=utcnow(),
    )
    with session.begin():
        check_storage_quota(session, settings, tenant_id, adding=0)  # trials make models
        session.add(sweep)
        session.flush()
        made = controller.top_up(session, sweep_id, settings)
    controller.send_trials(made, queue.send)
    return sweep_public(session, sweep)


def validate_sweep(
    session: Session, settings: Settings, tenant_id: str, body: Any
) -> SweepDefinition:
    """The sweep body as a definition with its base spec's defaults filled in.

    Checked before anything is stored: the body's schema; the base spec as a job would be
    (datasets, the model's shapes); that each parameter path exists in the spec and that
    each categorical value and each range's ends (a normal's mean ± 3 std) gives a valid
    spec; that the metric is one the spec records.
    """
    try:
        definition = SweepDefinition.model_validate(body)
    except ValidationError as exc:
        raise SpecError(
            [
                ErrorItem(tuple(e["loc"]), e["msg"].removeprefix("Value error, "), e["type"])
                for e in exc.errors()
            ]
        ) from None
    check = SpecCheck(session, settings, tenant_id)
    base = check(definition.spec, ("spec",))
    filled = base.model_dump(mode="json")
    problems = [
        *_parameter_problems(check, definition, filled),
        *_metric_problems(definition, base),
    ]
    if problems:
        raise SpecError(problems)
    return definition.model_copy(update={"spec": filled})


@dataclass(frozen=True)
class SpecCheck:
    """A spec checked as `POST /v1/jobs` checks one (schema, datasets, the model's shapes,
    `init_from`), for this tenant; errors under `loc`."""

    session: Session
    settings: Settings
    tenant_id: str

    def __call__(self, data: Any, loc: tuple[str, ...] = ()) -> JobSpec:
        try:
            spec = parse_spec(data)
            info = check_datasets(self.session, self.tenant_id, spec)
            check_limits(self.settings, spec, check_model_fits(spec, info))
            if spec.init_from is not None:
                source = find_job(self.session, self.tenant_id, spec.init_from.job)
                check_init_from(self.settings, spec, info, source)
        except SpecError as exc:
            items = [ErrorItem((*loc, *e.loc), e.msg, e.type) for e in exc.errors]
            raise SpecError(items) from None
        return spec


def _parameter_problems(
    check: SpecCheck, definition: SweepDefinition, filled: dict[str, Any]
) -> list[ErrorItem]:
    problems = []
    for name, parameter in definition.parameters.items():
        loc = ("parameters", name)
        try:
            path = parse_path(name)
            value_at(filled, path)
        except (ValueError, KeyError) as exc:
            problems.append(ErrorItem(loc, _message(exc), "invalid_path"))
            continue
        for value in extremes(parameter):
            try:
                check(with_values(filled, {path: value}))
            except SpecError as exc:
                where = "; ".join(
                    f"{'.'.join(map(str, e.loc)) or 'spec'}: {e.msg}" for e in exc.errors
                )
                problems.append(
                    ErrorItem(loc, f"the value {value!r} makes an invalid spec: {where}")
                )
                break
    return problems


def _metric_problems(definition: SweepDefinition, base: JobSpec) -> list[ErrorItem]:
    problems = []
    known = monitorable_metrics(base)
    if definition.metric.name not in known:
        problems.append(
            ErrorItem(
                ("metric", "name"),
                f"{definition.metric.name!r} is not recorded by the spec; pick one of: "
                f"{', '.join(known)} (add it to the spec's metrics, and validation for val_*)",
            )
        )
    rule = definition.early_termination
    if rule is not None and rule.min_epochs >= base.training.epochs:
        problems.append(
            ErrorItem(
                ("early_termination", "min_epochs"),
                f"min_epochs ({rule.min_epochs}) must be below the spec's training.epochs "
                f"({base.training.epochs}), or no trial is ever judged",
            )
        )
    return problems


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def list_sweeps(session: Session, tenant_id: str, query: SweepsQuery) -> SweepsPublic:
    statement = select(Sweep).where(Sweep.tenant_id == tenant_id)
    if query.status is not None:
        statement = statement.where(Sweep.status == query.status)
    with reading(session):
        page, next_cursor = newest_first_page(
            session,
            statement,
            created_at=Sweep.created_at,
            id=Sweep.id,
            limit=query.limit,
            cursor=query.cursor,
        )
        trials = _trials_of(session, [sweep.id for sweep in page])
    return SweepsPublic(
        data=[
            _public(
                sweep, trials.get(sweep.id, []), SweepDefinition.model_validate(sweep.definition)
            )
            for sweep in page
        ],
        next_cursor=next_cursor,
    )


def sweep_public(session: Session, sweep: Sweep) -> SweepPublic:
    return sweep_snapshot(session, sweep)[0]


def sweep_trials(session: Session, sweep: Sweep) -> TrialsPublic:
    return sweep_snapshot(session, sweep)[1]


def sweep_snapshot(session: Session, sweep: Sweep) -> tuple[SweepPublic, TrialsPublic]:
    """The sweep's body and its trial rows, from one read of its trials (the event stream
    shows both on every poll)."""
    definition = SweepDefinition.model_validate(sweep.definition)
    with reading(session):
        trials = _trials_of(session, [sweep.id]).get(sweep.id, [])
    rows = TrialsPublic(sweep_id=sweep.id, data=[_trial_row(t, definition) for t in trials])
    return _public(sweep, trials, definition), rows


def _trial_row(trial: Job, definition: SweepDefinition) -> TrialPublic:
    return TrialPublic(
        number=trial.trial_number or 0,
        job_id=trial.id,
        status=trial.status,
        pruned=controller.is_pruned(trial),
        params=trial.trial_params or {},
        value=controller.trial_value(trial, definition),
        epochs=_epochs(trial),
    )


def cancel_sweep(session: Session, sweep: Sweep) -> SweepPublic:
    """Cancel a running sweep and its queued and running trials; Conflict once it ended."""
    with session.begin():
        cancelled = controller.cancel(session, sweep)
        session.refresh(sweep)
    if not cancelled:
        raise Conflict(f"sweep {sweep.id} has already ended (status: {sweep.status})")
    return sweep_public(session, sweep)


def _trials_of(session: Session, sweep_ids: list[str]) -> dict[str, list[Job]]:
    if not sweep_ids:
        return {}
    rows = session.scalars(
        select(Job).where(Job.sweep_id.in_(sweep_ids)).order_by(Job.trial_number)
    ).all()
    grouped: dict[str, list[Job]] = {}
    for job in rows:
        grouped.setdefault(job.sweep_id or "", []).append(job)
    return grouped


def _epochs(trial: Job) -> int:
    if trial.summary and isinstance(trial.summary.get("epochs_completed"), int):
        return int(trial.summary["epochs_completed"])
    return trial.progress.epoch if trial.progress is not None else 0


def _public(sweep: Sweep, trials: list[Job], definition: SweepDefinition) -> SweepPublic:
    best = None
    for trial in trials:
        value = controller.trial_value(trial, definition)
        if (
            trial.status.terminal
            and value is not None
            and trial.trial_number is not None
            and (best is None or definition.metric.better(value, best.value))
        ):
            best = BestTrial(
                job_id=trial.id,
                number=trial.trial_number,
                value=value,
                params=trial.trial_params or {},
            )
    dumped = definition.model_dump(mode="json")
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        trials=TrialCounts(**controller.trial_counts(trials)),
        best=best,
        epochs_used=sum(_epochs(trial) for trial in trials),
        spec=dumped["spec"],
        parameters=dumped["parameters"],
        method=definition.method,
        metric=definition.metric,
        early_termination=definition.early_termination,
        max_trials=definition.trials_budget,
        max_concurrent=definition.max_concurrent,
        seed=definition.seed,
    )
