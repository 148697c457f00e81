"""A sweep's Server-Sent Events (`GET /v1/sweeps/{id}/events`) until the sweep ends.

The server sends `sweep` (the whole sweep) and `trial` (a row of `/trials`) events, all of
them again on a new connection, so a dropped stream is simply reopened and what was
already given is skipped. Without a stream the sweep is polled and the same events made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from httpx_sse import connect_sse

from backprop_client.errors import BackpropError, raise_for_status
from backprop_client.events import MAX_CONSECUTIVE_DROPS, STREAM_READ_TIMEOUT, Event

SWEEP_RUNNING = "running"


def sweep_ended(event: Event) -> bool:
    """Whether `event` is the sweep's terminal `sweep` event."""
    return event.event == "sweep" and event.data.get("status") != SWEEP_RUNNING


class SweepEvents:
    """Iterate over a sweep's new events until (and including) its terminal `sweep` event."""

    def __init__(
        self,
        http: httpx.Client,
        sweep_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.http = http
        self.sweep_id = sweep_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.sleep = sleep
        self.seen: dict[tuple[str, Any], Any] = {}  # (event, trial number) -> data

    def __iter__(self) -> Iterator[Event]:
        drops = 0
        streaming = True
        while True:
            try:
                events = self._stream() if streaming else self._poll()
                for event in events:
                    drops = 0
                    yield event
                    if sweep_ended(event):
                        return
                drops += streaming  # a stream that closed before the sweep ended
            except _StreamUnavailable:
                streaming = False
                continue
            except httpx.TransportError as error:
                drops += 1
                if drops >= MAX_CONSECUTIVE_DROPS:
                    if not streaming:
                        raise BackpropError.unreachable(str(self.http.base_url), error) from error
                    streaming = False
            self._check_deadline()
            self.sleep(self.poll_interval)

    def _admit(self, event: Event) -> Event | None:
        key = (event.event, event.data.get("number") if event.event == "trial" else None)
        if self.seen.get(key) == event.data:
            return None
        self.seen[key] = event.data
        return event

    def _stream(self) -> Iterator[Event]:
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT)
        url = f"/v1/sweeps/{self.sweep_id}/events"
        with connect_sse(self.http, "GET", url, timeout=timeout) as source:
            response = source.response
            if response.status_code in (401, 404):
                raise_for_status(response)
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                raise _StreamUnavailable
            for sse in source.iter_sse():
                self._check_deadline()
                event = Event.from_sse(sse)
                if event is not None and (admitted := self._admit(event)) is not None:
                    yield admitted

    def _poll(self) -> Iterator[Event]:
        sweep = raise_for_status(self.http.get(f"/v1/sweeps/{self.sweep_id}")).json()
        trials = raise_for_status(self.http.get(f"/v1/sweeps/{self.sweep_id}/trials")).json()
        for event in [*(Event("trial", row) for row in trials["data"]), Event("sweep", sweep)]:
            if (admitted := self._admit(event)) is not None:
                yield admitted

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"sweep {self.sweep_id} still running after {self.timeout:g} s")


class _StreamUnavailable(Exception):
    """The server answered the events request with something other than an event stream."""
