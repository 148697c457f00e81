"""Backprop's Python client: `Client` (REST + live events) and the `backprop` client commands.

It needs only httpx and httpx-sse (PyYAML for YAML specs, pandas for `Metrics.to_pandas`,
rich for the CLI) and never imports the server's packages.

The names below load on first use, so that `backprop serve`, which imports the command
definitions, does not pay for importing httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BackpropError": "errors",
    "Client": "client",
    "Connection": "connection",
    "Dataset": "models",
    "Event": "events",
    "Job": "models",
    "JobError": "models",
    "Sweep": "models",
    "Trial": "models",
    "Metrics": "models",
    "Prediction": "models",
    "Progress": "models",
    "Series": "models",
    "SpecFileError": "specs",
    "load_spec": "specs",
    "resolve_connection": "connection",
}
__all__ = [
    "BackpropError",
    "Client",
    "Connection",
    "Dataset",
    "Event",
    "Job",
    "JobError",
    "Metrics",
    "Prediction",
    "Progress",
    "Series",
    "SpecFileError",
    "Sweep",
    "Trial",
    "load_spec",
    "resolve_connection",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'backprop_client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"backprop_client.{_EXPORTS[name]}"), name)


if TYPE_CHECKING:
    from backprop_client.client import Client
    from backprop_client.connection import Connection, resolve_connection
    from backprop_client.errors import BackpropError
    from backprop_client.events import Event
    from backprop_client.models import (
        Dataset,
        Job,
        JobError,
        Metrics,
        Prediction,
        Progress,
        Series,
        Sweep,
        Trial,
    )
    from backprop_client.specs import SpecFileError, load_spec
