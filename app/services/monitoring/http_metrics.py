"""Request counts and latency by route template, as a plain ASGI middleware.

Labels use the route's template (`/v1/jobs/{job_id}`), never the raw path, so the number
of series stays bounded whatever paths clients send; unmatched paths share one label.
Latency is the time until the response's headers are sent: a JSON answer is complete by
then, while an event stream or a file download would otherwise count its whole transfer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
CLIENT_GONE = 499  # nginx's code for a client that closed the connection first
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HttpMetrics:
    """The HTTP series of one app, in its own registry."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "backprop_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "backprop_http_request_duration_seconds",
            "Seconds from a request's arrival to its response headers, by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = _route_template(scope)
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")  # set by the router once a route matched
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                self.metrics.observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException as exc:
            if not answered:  # the server answers 500; a cancel means the client went away
                status = CLIENT_GONE if isinstance(exc, asyncio.CancelledError) else 500
                self.metrics.observe(scope, status, time.perf_counter() - started)
            raise
