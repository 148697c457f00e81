"""The data of the job event stream's events (`GET /v1/jobs/{id}/events`).

`status` events carry a whole `JobPublic`; these are the other two.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas.jobs import JobProgress, MetricSeriesPublic


class ProgressEventData(BaseModel):
    """`event: progress`: the job's progress changed."""

    progress: JobProgress | None
    eta_seconds: float | None


class MetricsEventData(BaseModel):
    """`event: metrics`: metric points not sent before on this stream (or before the
    `Last-Event-ID` it resumed from), in the series shape of `GET /v1/jobs/{id}/metrics`.

    After a resumed job rewrites the steps since its checkpoint, those steps come again
    with their new values: a client replaces points by step.
    """

    series: list[MetricSeriesPublic] = Field(description="sorted by name; points by step")
