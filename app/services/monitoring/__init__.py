"""Prometheus metrics (`GET /metrics`): HTTP traffic of this process, and the service's
state read from the database at scrape time (`ServiceCollector`)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from app.services.monitoring.http_metrics import HttpMetrics, HttpMetricsMiddleware
from app.services.monitoring.service_collector import ServiceCollector


def install_monitoring(app: FastAPI) -> None:
    """Give `app` its own registry (`app.state.metrics_registry`) and the HTTP middleware."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    # The lifespan sets `sessionmaker` and `events`; until it has run they are absent.
    registry.register(ServiceCollector(lambda: getattr(app.state, "sessionmaker", None)))
    streams = Gauge(
        "backprop_event_streams", "Open job event streams in this API process", registry=registry
    )
    streams.set_function(lambda: getattr(getattr(app.state, "events", None), "watchers", 0))
    app.state.metrics_registry = registry
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(registry))


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type: OpenMetrics when the scraper asks for it,
    else Prometheus' text format."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
