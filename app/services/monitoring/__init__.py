"""Prometheus metrics (`GET /metrics`): HTTP traffic of this process, and the service's
state read from the database at scrape time (`ServiceCollector`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from app.services.monitoring.http_metrics import HttpMetrics, HttpMetricsMiddleware
from app.services.monitoring.service_collector import ServiceCollector

# prometheus_client's own switch, set by `backprop api --workers N` before the processes
# start: each process then keeps its series in files in this folder.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def install_monitoring(app: FastAPI) -> None:
    """Give `app` the registry that `GET /metrics` shows (`app.state.metrics_registry`),
    the HTTP middleware and the event-stream gauge (`app.state.event_streams`)."""
    registry = CollectorRegistry()
    shared_dir = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if shared_dir:
        # Several API processes behind one port: whichever answers a scrape sums every
        # process's files, so the HTTP series count all requests. The series objects go in
        # a registry of their own, or each would also show up once more, unsummed.
        MultiProcessCollector(registry, path=shared_dir)
        series = CollectorRegistry()
    else:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        series = registry
    # The lifespan sets `sessionmaker`; until it has run it is absent.
    registry.register(ServiceCollector(lambda: getattr(app.state, "sessionmaker", None)))
    app.state.event_streams = Gauge(
        "backprop_event_streams",
        "Open job event streams",
        registry=series,
        multiprocess_mode="livesum",
    )
    app.state.metrics_registry = registry
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(series))


async def counted(stream: AsyncIterator[str], gauge: Gauge) -> AsyncIterator[str]:
    """`stream`, counted in `gauge` while it is open."""
    gauge.inc()
    try:
        async for chunk in stream:
            yield chunk
    finally:
        gauge.dec()


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type: OpenMetrics when the scraper asks for it,
    else Prometheus' text format."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
