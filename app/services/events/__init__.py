"""Job event streams (`GET /v1/jobs/{id}/events`): one shared poller, many watchers."""

from app.services.events.cursor import EventCursor
from app.services.events.hub import JobEventHub

__all__ = ["EventCursor", "JobEventHub"]
