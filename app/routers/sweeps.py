"""Sweeps: submit, list, get, trials, cancel, events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import WithJsonSchema

from app.deps import CurrentTenant, QueueDep, SessionDep, SettingsDep
from app.domain.db.engine import reading
from app.domain.db.models import Sweep
from app.domain.errors import NotFound
from app.domain.status import SweepStatus
from app.routers.jobs import job_errors
from app.schemas.common import error_responses
from app.schemas.sweeps import (
    SWEEP_EXAMPLE,
    SweepPublic,
    SweepsPublic,
    SweepsQuery,
    TrialsPublic,
)
from app.services import sweeps

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=error_responses(401))

# One Server-Sent Event (OpenAPI 3.1: the schema of a text/event-stream is each event's).
SWEEP_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["sweep", "trial"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "the sweep (as `GET /v1/sweeps/{id}`) or one trial row",
        },
    },
}
EVENT_POLL_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 15.0
_SWEEP = "2d1b8c4e-7a55-4d0e-9d3c-3f1f4b6e2a10"
_ERRORS = {
    404: f"no sweep with id '{_SWEEP}'",
    409: f"sweep {_SWEEP} has already ended (status: succeeded)",
    422: [
        {
            "loc": ["body", "parameters", "model.layers[9].units"],
            "msg": "model.layers has 6 items, so [9] does not exist",
            "type": "invalid_path",
        }
    ],
}


def sweep_for_tenant(
    sweep_id: Annotated[str, Path(description="the sweep's id")],
    session: SessionDep,
    tenant: CurrentTenant,
) -> Sweep:
    """The caller's sweep, or 404 exactly as for an id that does not exist."""
    sweep = sweeps.find_sweep(session, tenant.id, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep with id {sweep_id!r}")
    return sweep


SweepDep = Annotated[Sweep, Depends(sweep_for_tenant)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Start a hyperparameter sweep",
    description="The whole body is validated before anything is queued: the base spec as "
    "a job's, every parameter path, each categorical value and each range's ends (a "
    "normal's mean ± 3 std) as a spec, and the metric. Then the first `max_concurrent` "
    "trials are queued; each is an ordinary job (`GET /v1/jobs?sweep=<id>`).",
    responses=job_errors(400, 422, examples=_ERRORS),
)
def submit_sweep(
    body: Annotated[
        dict[str, Any],
        # Validated by the service (`loc`s into the body); documented as SweepCreate.
        WithJsonSchema({"$ref": "#/components/schemas/SweepCreate"}),
        Body(openapi_examples={"digits": {"summary": "API.md's sweep", "value": SWEEP_EXAMPLE}}),
    ],
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    queue: QueueDep,
) -> SweepPublic:
    return sweeps.submit_sweep(session, queue, settings, tenant.id, body)


@router.get("", summary="List sweeps, newest first", responses=job_errors(422))
def list_sweeps(
    query: Annotated[SweepsQuery, Query()], session: SessionDep, tenant: CurrentTenant
) -> SweepsPublic:
    return sweeps.list_sweeps(session, tenant.id, query)


@router.get("/{sweep_id}", summary="Get a sweep", responses=job_errors(404, examples=_ERRORS))
def get_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    return sweeps.sweep_public(session, sweep)


@router.get(
    "/{sweep_id}/trials",
    summary="A sweep's trials, by number",
    responses=job_errors(404, examples=_ERRORS),
)
def sweep_trials(sweep: SweepDep, session: SessionDep) -> TrialsPublic:
    return sweeps.sweep_trials(session, sweep)


@router.post(
    "/{sweep_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a sweep and its queued and running trials",
    responses=job_errors(404, 409, examples=_ERRORS),
)
def cancel_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    return sweeps.cancel_sweep(session, sweep)


@router.get(
    "/{sweep_id}/events",
    summary="A sweep's Server-Sent Events",
    description="`event: sweep` (the whole sweep, as `GET /v1/sweeps/{id}` answers) first "
    "and whenever it changes; `event: trial` (a row of `/trials`) for each trial that is "
    "new or changed. Polled every 0.5 s; the stream ends after the sweep's terminal status.",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SWEEP_EVENT_SCHEMA}},
            "description": "events until the sweep's terminal status",
        },
        **job_errors(404, examples=_ERRORS),
    },
)
async def sweep_events(
    sweep: SweepDep, caller: CurrentTenant, request: Request
) -> StreamingResponse:
    return StreamingResponse(
        request.app.state.key_watch.until_revoked(caller.key_id, _events(request, sweep)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(request: Request, sweep: Sweep) -> AsyncIterator[str]:
    sent_sweep: Any = None
    sent_trials: dict[int, Any] = {}
    quiet = 0.0
    while True:
        body, trials = await run_in_threadpool(_snapshot, request, sweep.id)
        chunks = []
        for trial in trials.data:
            row = trial.model_dump(mode="json")
            if sent_trials.get(trial.number) != row:
                sent_trials[trial.number] = row
                chunks.append(_event("trial", row))
        whole = body.model_dump(mode="json")
        if whole != sent_sweep:
            sent_sweep = whole
            chunks.append(_event("sweep", whole))
        if chunks:
            quiet = 0.0
            yield "".join(chunks)
        elif quiet >= KEEP_ALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
        if body.status != SweepStatus.RUNNING or await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_SECONDS)
        quiet += EVENT_POLL_SECONDS


def _snapshot(request: Request, sweep_id: str) -> tuple[SweepPublic, TrialsPublic]:
    with request.app.state.sessionmaker() as session:
        with reading(session):
            row = session.get(Sweep, sweep_id, populate_existing=True)
        assert row is not None
        return sweeps.sweep_snapshot(session, row)


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
