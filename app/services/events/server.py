"""Run the API with uvicorn so that open event streams never hold up a shutdown.

On Ctrl-C or SIGTERM uvicorn stops accepting connections, then waits for every response
in flight to finish before the app's lifespan shutdown runs. An event stream lasts until
its job ends, so plain `uvicorn.run` would wait for it indefinitely (or, with a graceful
timeout, cancel it with a traceback). This server first ends the streams cleanly; their
clients reconnect with `Last-Event-ID`, to this process once restarted or to another one.
"""

from __future__ import annotations

import socket
import sys
from contextlib import suppress
from typing import Any

import uvicorn
from fastapi import FastAPI

STARTUP_FAILURE = 3  # uvicorn's exit status when the server could not start


class EventStreamingServer(uvicorn.Server):
    """A `uvicorn.Server` for `app` that ends its event streams first when shutting down."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hub: Any = getattr(self.app.state, "events", None)
        if hub is not None:
            hub.end_streams()
        await super().shutdown(sockets)


def run_api(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """`uvicorn.run(app, host=…, port=…)` for one process, with `EventStreamingServer`."""
    server = EventStreamingServer(
        uvicorn.Config(app, host=host, port=port, log_level=log_level), app
    )
    with suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
