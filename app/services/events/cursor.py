"""The `id:` of job events: where a client that reconnects picks the stream up again.

Metric rows carry the time their worker recorded them, and a worker commits its rows in
that order (one flush transaction after another, each holding points recorded after the
previous one's), so "every row with a later `time` than the newest one sent" is exactly
what a watcher has not seen. A resumed job upserts the steps after its checkpoint with
new times, so those come again with their new values. The one assumption: when a job
moves to another worker, that worker's clock is not behind the first one's by more than
the seconds a restart takes (NTP-synced hosts are within milliseconds).

Status and progress need no position: every (re)connection starts with the job's status,
which holds its progress.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID = re.compile(r"(\d{1,20})\.(\d{1,12})")
INVALID = (
    "not an event id from this stream; send the `id:` of the last event received unchanged, "
    "or no Last-Event-ID to start from the beginning"
)


@dataclass(frozen=True)
class EventCursor:
    """Metric points up to `metrics_until` (None: none yet) have been sent."""

    metrics_until: datetime | None = None

    def event_id(self, sequence: int) -> str:
        """The `id:` of this stream's `sequence`-th event at this position."""
        micros = 0 if self.metrics_until is None else (self.metrics_until - _EPOCH) // _MICRO
        return f"{micros}.{sequence}"

    @classmethod
    def parse(cls, event_id: str) -> EventCursor:
        """The position an `event_id` stands for.

        Raises:
          ValueError: for anything `event_id` did not make.
        """
        match = _ID.fullmatch(event_id.strip())
        if match is None:
            raise ValueError(INVALID)
        micros = int(match.group(1))
        try:
            until = _EPOCH + timedelta(microseconds=micros) if micros else None
        except OverflowError as exc:
            raise ValueError(INVALID) from exc
        return cls(until)


_MICRO = timedelta(microseconds=1)
