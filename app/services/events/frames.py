"""Server-Sent Events framing and the JSON data of each event."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter

from app.schemas.events import MetricsEventData, ProgressEventData
from app.services.events.reads import JobState, Point
from app.services.metrics_query import series_public

KEEPALIVE = ": keep-alive\n\n"


def frame(event: str, event_id: str, data: str) -> str:
    """One event; `data` is one line of JSON (pydantic never writes newlines in it)."""
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n"


def progress_data(state: JobState) -> str:
    data = ProgressEventData(progress=state.progress, eta_seconds=state.eta_seconds)
    return data.model_dump_json()


def metrics_data(points: Sequence[Point]) -> str:
    """`points` ordered by (name, step), as series like `GET /v1/jobs/{id}/metrics`'s."""
    series = [
        series_public(name, list(group)) for name, group in groupby(points, attrgetter("name"))
    ]
    return MetricsEventData(series=series).model_dump_json()
