"""A job's Server-Sent Events: `GET /v1/jobs/{id}/events`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from app.deps import CurrentTenant
from app.routers.jobs import JobDep, job_errors
from app.schemas.common import error_responses
from app.schemas.openapi import EVENT_ID_PATTERN
from app.services.events import EventCursor, JobEventHub
from app.services.monitoring import counted

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401))

_EXAMPLE = (
    'id: 0.1\nevent: status\ndata: {"id": "…", "status": "running", …}\n\n'
    'id: 1735732802123456.2\nevent: metrics\ndata: {"series": [{"name": "loss", "step": [10], '
    '"epoch": [0], "value": [2.1], "time": ["2025-01-01T12:00:02.123456Z"]}]}\n\n'
    'id: 1735732802123456.3\nevent: progress\ndata: {"progress": {"epoch": 0, "epochs": 20, '
    '"step": 10, "steps": 480, "fraction": 0.02}, "eta_seconds": 40.5}\n\n'
)
_CURSOR_422 = [{"loc": ["header", "Last-Event-ID"], "msg": "Value error, not an event id …"}]
_DESCRIPTION = """\
`event: status` (the whole job, as `GET /v1/jobs/{id}` answers) first and on every status
change; `event: progress` (`{"progress", "eta_seconds"}`) when the progress changes;
`event: metrics` (`{"series": [...]}` as `GET /v1/jobs/{id}/metrics`) with the points not
sent before: on a fresh connection, all points so far. Events lag the worker by at most
about a second; `: keep-alive` comments come every 15 s when idle. The stream ends after
the terminal status, which is always the last event (a finished job sends its metrics
first). Reconnect with `Last-Event-ID` (or `?last_event_id=`) to get only what came after
that event, starting with a fresh status."""


def _valid_cursor(event_id: str | None) -> str | None:
    if event_id:
        EventCursor.parse(event_id)  # a ValueError is a 422 at this header or query key
    return event_id or None


EventId = AfterValidator(_valid_cursor)
LastEventIdHeader = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=64, description="the last event's `id:`"),
    EventId,
]
LastEventIdQuery = Annotated[
    str | None,
    Query(max_length=64, description="Last-Event-ID, for clients that cannot set headers"),
    EventId,
]


def event_cursor(
    last_event_id_header: LastEventIdHeader = None, last_event_id: LastEventIdQuery = None
) -> EventCursor | None:
    """Where a reconnecting client resumes; the header wins over the query."""
    event_id = last_event_id_header or last_event_id
    return EventCursor.parse(event_id) if event_id else None


def event_hub(request: Request) -> JobEventHub:
    hub: JobEventHub = request.app.state.events
    return hub


@router.get(
    "/{job_id}/events",
    summary="Follow a job: Server-Sent Events",
    description=_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            # OpenAPI 3.1: the schema of a text/event-stream describes each event.
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["event", "data", "id"],
                        "properties": {
                            "event": {"enum": ["status", "progress", "metrics"]},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                            "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
                        },
                    },
                    "example": _EXAMPLE,
                }
            },
            "description": "events until the job's terminal status",
        },
        **job_errors(404, 422, examples={422: _CURSOR_422}),
    },
)
async def job_events(
    request: Request,
    job: JobDep,
    caller: CurrentTenant,
    hub: Annotated[JobEventHub, Depends(event_hub)],
    cursor: Annotated[EventCursor | None, Depends(event_cursor)],
) -> StreamingResponse:
    return StreamingResponse(
        counted(
            request.app.state.key_watch.until_revoked(caller.key_id, hub.stream(job.id, cursor)),
            request.app.state.event_streams,
        ),
        media_type="text/event-stream",
        # No caching, and no buffering by nginx-style proxies, which would delay events.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
