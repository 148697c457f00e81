"""Unauthenticated Prometheus scrape endpoint: `GET /metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.schemas.common import error_responses
from app.services import monitoring

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="HTTP requests of this API process by route; jobs by status, queue depths, "
    "job durations, worker heartbeats and training throughput from the database. "
    "OpenMetrics when the `Accept` header asks for it. See docs/api.md for every series.",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "the Prometheus text exposition format",
        },
        **error_responses(503),
    },
)
def prometheus_metrics(request: Request) -> Response:
    body, content_type = monitoring.render(
        request.app.state.metrics_registry, request.headers.get("accept")
    )
    return Response(body, media_type=content_type)
