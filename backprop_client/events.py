"""A job's Server-Sent Events (`GET /v1/jobs/{id}/events`) as `Event`s, until the job ends.

httpx-sse reads the text/event-stream format; `Event.from_sse` makes its events `Event`s
(and `parse_sse` those of a stream's lines). `JobEvents` follows one job: it reads the
stream and, when the stream drops, reconnects with `Last-Event-ID`, so that nothing is lost
or repeated. When the server offers no event stream, or reconnecting keeps failing, it
falls back to polling `GET /v1/jobs/{id}` (and the job's metrics) and makes the same events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse
from httpx_sse._decoders import SSEDecoder  # httpx-sse has no public line-by-line decoder

from backprop_client.errors import BackpropError, raise_for_status
from backprop_client.models import TERMINAL_STATUSES, Job

STREAM_READ_TIMEOUT = 60.0  # the server sends a keep-alive comment every ~15 s
RECONNECT_MAX_SECONDS = 5.0
MAX_CONSECUTIVE_DROPS = 5  # stream drops before polling; failed polls before giving up


@dataclass(frozen=True)
class Event:
    """One event: `event` is `status`, `progress` or `metrics`; `data` its parsed JSON."""

    event: str
    data: Any
    id: str | None = None

    @classmethod
    def from_sse(cls, sse: ServerSentEvent, last_id: str | None = None) -> Event | None:
        """httpx-sse's event, its data parsed as JSON where it is JSON and `last_id` when it
        has no id; None for one without data, which httpx-sse also hands on for the blank
        line after a comment (the server's keep-alive) once the stream has given an id."""
        if not sse.data:
            return None
        try:
            data = json.loads(sse.data)
        except ValueError:
            data = sse.data
        return cls(sse.event, data, sse.id or last_id)

    @property
    def job(self) -> Job | None:
        """The job, for a `status` event."""
        return Job.from_json(self.data) if self.event == "status" else None

    @property
    def is_terminal(self) -> bool:
        return self.event == "status" and self.data.get("status") in TERMINAL_STATUSES


@dataclass
class SSEParser:
    """The text/event-stream format, fed line by line (line endings already removed), read
    by httpx-sse's decoder; `last_id` and `retry_ms` are updated as each event ends."""

    last_id: str | None = None
    retry_ms: int | None = None
    _decoder: SSEDecoder = field(default_factory=SSEDecoder, repr=False)

    def feed(self, line: str) -> Event | None:
        """The event that `line` completes (a blank line ends one), else None."""
        sse = self._decoder.decode(line)
        if sse is None:
            return None
        self.last_id = sse.id or self.last_id
        if sse.retry is not None:
            self.retry_ms = sse.retry
        return Event.from_sse(sse, self.last_id)


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream's lines; an unfinished last event is dropped."""
    parser = SSEParser()
    for line in lines:
        event = parser.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event


@dataclass
class _Seen:
    """What the caller has been given, so that a reconnection repeats no status, and a poll
    after the stream nothing at all."""

    status: tuple[str, int, int] | None = None
    progress: Any = None
    last_step: dict[str, int] = field(default_factory=dict)

    def admit(self, event: Event, *, polled: bool = False) -> Event | None:
        """`event`, less what was already seen (None when nothing is new). The stream's
        metrics pass whole: the server sends only new points, and the steps a resumed job
        redoes come again, to replace the old ones; a poll's are cut to the new steps."""
        if event.event == "status":
            key = (
                event.data.get("status"),
                event.data.get("attempt", 1),
                event.data.get("platform_interruptions", 0),
            )
            if key == self.status:
                return None
            self.status = key
        elif event.event == "progress":
            if event.data == self.progress:
                return None
            self.progress = event.data
        elif event.event == "metrics" and polled:
            series = [self._new_points(item) for item in event.data.get("series", [])]
            series = [item for item in series if item["step"]]
            if not series:
                return None
            return Event("metrics", {**event.data, "series": series}, event.id)
        elif event.event == "metrics":
            for item in event.data.get("series", []):
                if item["step"]:
                    last = self.last_step.get(item["name"], -1)
                    self.last_step[item["name"]] = max(last, item["step"][-1])
        return event

    def _new_points(self, series: dict[str, Any]) -> dict[str, Any]:
        last = self.last_step.get(series["name"], -1)
        keep = [i for i, step in enumerate(series["step"]) if step > last]
        if keep:
            self.last_step[series["name"]] = series["step"][keep[-1]]
        columns = ("step", "epoch", "value", "time")
        return {**series, **{c: [series[c][i] for i in keep] for c in columns if c in series}}


class _StreamUnavailable(Exception):
    """The server answered the events request with something other than an event stream."""


class JobEvents:
    """Iterate over a job's events until (and including) its terminal `status` event."""

    def __init__(
        self,
        http: httpx.Client,
        job_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.http = http
        self.job_id = job_id
        self.poll_interval = poll_interval
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.sleep = sleep
        self.seen = _Seen()
        self.last_id: str | None = None
        self.streaming = True  # False once polling took over

    def __iter__(self) -> Iterator[Event]:
        drops = 0
        while self.streaming:
            try:
                for event in self._stream():
                    drops = 0
                    yield event
                    if event.is_terminal:
                        return
                drops += 1  # the server closed the stream before the job ended
            except _StreamUnavailable:
                self.streaming = False
            except httpx.TransportError:
                drops += 1
            if drops >= MAX_CONSECUTIVE_DROPS:
                self.streaming = False
            elif self.streaming:
                self._check_deadline()
                self.sleep(min(self.poll_interval * drops, RECONNECT_MAX_SECONDS))
        drops = 0
        while True:
            try:
                for event in self._poll():
                    yield event
                    if event.is_terminal:
                        return
                drops = 0
            except httpx.TransportError as error:
                drops += 1
                if drops >= MAX_CONSECUTIVE_DROPS:
                    raise BackpropError.unreachable(str(self.http.base_url), error) from error
            self._check_deadline()
            self.sleep(self.poll_interval)

    def _stream(self) -> Iterator[Event]:
        headers = {} if self.last_id is None else {"Last-Event-ID": self.last_id}
        timeout = httpx.Timeout(10.0, read=self._read_timeout())
        url = f"/v1/jobs/{self.job_id}/events"
        with connect_sse(self.http, "GET", url, headers=headers, timeout=timeout) as source:
            response = source.response
            content_type = response.headers.get("content-type", "")
            if response.status_code == 401:
                raise_for_status(response)
            # Checked here: `iter_sse` raises an `httpx.TransportError` (SSEError) instead,
            # which would count as a dropped stream, not as a server without one.
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                raise _StreamUnavailable  # the first poll says whether the job is missing
            for sse in source.iter_sse():
                # Keep-alives come here too (as events without data, once the stream has
                # given an id: the first frame does), so a quiet stream ends at the deadline.
                self._check_deadline()
                event = Event.from_sse(sse, self.last_id)
                if event is None:
                    continue
                self.last_id = event.id
                admitted = self.seen.admit(event)
                if admitted is not None:
                    yield admitted

    def _poll(self) -> Iterator[Event]:
        """The events the job's state implies, from `GET /v1/jobs/{id}` and its metrics:
        a status change first, the terminal status last (after the final metrics)."""
        job = raise_for_status(self.http.get(f"/v1/jobs/{self.job_id}")).json()
        metrics = raise_for_status(self.http.get(f"/v1/jobs/{self.job_id}/metrics")).json()
        status = Event("status", job)
        terminal = status.is_terminal
        progress = {"progress": job["progress"], "eta_seconds": job["eta_seconds"]}
        polled = [
            *([] if terminal else [status]),
            Event("metrics", {"series": metrics["series"]}),
            *([Event("progress", progress)] if job["progress"] else []),
            *([status] if terminal else []),
        ]
        for event in polled:
            admitted = self.seen.admit(event, polled=True)
            if admitted is not None:
                yield admitted

    def _read_timeout(self) -> float:
        """A silent stream is checked against the deadline, not only when a line comes."""
        if self.deadline is None:
            return STREAM_READ_TIMEOUT
        return min(STREAM_READ_TIMEOUT, max(self.deadline - time.monotonic(), 0.0) + 0.1)

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            status = self.seen.status[0] if self.seen.status else "unknown"
            raise TimeoutError(f"job {self.job_id} still {status} after {self.timeout:g} s")
