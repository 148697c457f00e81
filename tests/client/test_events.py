"""The event stream as the client reads it: the SSE format on canned text, and following a
job through drops, resumption and the polling fallback on a scripted server (httpx's
MockTransport), where the timing of a real one could not be controlled."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from backprop_client import BackpropError, Client, Event
from backprop_client.events import MAX_CONSECUTIVE_DROPS, SSEParser, parse_sse

JOB_ID = "5f0c6a1e-4d43-4a8e-9a53-2f6f0e8f1c2d"
EVENTS_PATH = f"/v1/jobs/{JOB_ID}/events"
SSE = {"content-type": "text/event-stream; charset=utf-8"}


def test_parse_sse_reads_the_format() -> None:
    text = (
        ": keep-alive\n"
        'id: 7\nevent: status\ndata: {"status": "running"}\n\n'
        'event: progress\r\ndata:{"a": 1}\r\n\r\n'  # no space after the colon; CRLF
        "data: first line\ndata: second line\nretry: 3000\nunknown: ignored\n\n"
        "id: bad\0id\ndata: 4\n\n"  # an id with NUL is ignored, the event is not
        "\n\n"  # blank lines alone dispatch nothing
        'event: status\ndata: {"unfinished": true}\n'  # the stream ended mid-event
    )
    events = list(parse_sse(text.splitlines(keepends=True)))
    assert events == [
        Event("status", {"status": "running"}, "7"),
        Event("progress", {"a": 1}, "7"),  # the last id carries over
        Event("message", "first line\nsecond line", "7"),
        Event("message", 4, "7"),
    ]
    parser = SSEParser()
    for line in ("retry: 3000", "id: 9", ""):
        assert parser.feed(line) is None
    assert (parser.retry_ms, parser.last_id) == (3000, "9")


def frame(event: str, data: Any, event_id: str) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


def job(status: str, epoch: int = 0) -> dict[str, Any]:
    progress = {"epoch": epoch, "epochs": 2, "step": epoch, "steps": 2, "fraction": epoch / 2}
    return {
        "id": JOB_ID,
        "name": "xor",
        "status": status,
        "attempt": 1,
        "progress": None if status == "queued" else progress,
        "eta_seconds": None,
    }


def series(*steps: int) -> dict[str, Any]:
    return {
        "name": "loss",
        "step": list(steps),
        "epoch": [step - 1 for step in steps],
        "value": [1.0 / step for step in steps],
        "time": ["2025-01-01T00:00:00Z"] * len(steps),
    }


class DroppedStream(httpx.SyncByteStream):
    """Some events, then the connection breaks."""

    def __init__(self, *frames: bytes):
        self.frames = frames

    def __iter__(self) -> Iterator[bytes]:
        yield from self.frames
        raise httpx.ReadError("connection reset by peer")


def scripted_client(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://backprop.test", "bp_key", transport=httpx.MockTransport(handler))


def summary(events: list[Event]) -> list[tuple[str, Any]]:
    """(kind, what it says): the status, the progress's epoch, or the metric steps."""
    said = {
        "status": lambda data: data["status"],
        "progress": lambda data: data["progress"]["epoch"],
        "metrics": lambda data: [s["step"] for s in data["series"]],
    }
    return [(event.event, said[event.event](event.data)) for event in events]


def test_a_dropped_stream_resumes_from_the_last_event_id() -> None:
    resumed_from: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer bp_key"
        assert request.url.path == EVENTS_PATH
        resumed_from.append(request.headers.get("last-event-id"))
        if len(resumed_from) == 1:
            first = (
                frame("status", job("running"), "1"),
                frame("metrics", {"series": [series(1)]}, "2"),
            )
            return httpx.Response(200, headers=SSE, stream=DroppedStream(*first))
        rest = [
            frame("status", job("running", 1), "3"),  # first on every connection: not repeated
            frame("metrics", {"series": [series(2)]}, "4"),
            frame("progress", {"progress": job("running", 2)["progress"], "eta_seconds": 0}, "5"),
            frame("status", job("succeeded", 2), "6"),
        ]
        return httpx.Response(200, headers=SSE, content=b"".join(rest))

    with scripted_client(handler) as client:
        events = list(client.stream(JOB_ID, poll_interval=0))
    assert resumed_from == [None, "2"]
    assert summary(events) == [
        ("status", "running"),
        ("metrics", [[1]]),
        ("metrics", [[2]]),
        ("progress", 2),
        ("status", "succeeded"),
    ]


def polling_server(events_answer: Callable[[], httpx.Response]) -> Callable[..., httpx.Response]:
    """A job that is queued, then running (epoch 1), then succeeded, one step per look."""
    looks = {"job": 0}
    states = [(job("queued"), []), (job("running", 1), [1]), (job("succeeded", 2), [1, 2])]

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == EVENTS_PATH:
            return events_answer()
        if path == f"/v1/jobs/{JOB_ID}":
            looks["job"] += 1
        body, steps = states[min(looks["job"], len(states)) - 1]
        if path == f"/v1/jobs/{JOB_ID}":
            return httpx.Response(200, json=body)
        assert path == f"/v1/jobs/{JOB_ID}/metrics"
        return httpx.Response(
            200, json={"job_id": JOB_ID, "series": [series(*steps)] if steps else []}
        )

    return handler


@pytest.mark.parametrize(
    "events_answer",
    [
        pytest.param(
            lambda: httpx.Response(404, json={"detail": "Not Found"}), id="no-stream-route"
        ),
        pytest.param(lambda: httpx.Response(200, json={"not": "a stream"}), id="not-a-stream"),
    ],
)
def test_without_a_stream_the_job_is_polled_into_the_same_events(
    events_answer: Callable[[], httpx.Response],
) -> None:
    with scripted_client(polling_server(events_answer)) as client:
        events: list[Event] = []
        finished = client.wait(JOB_ID, callback=events.append, poll_interval=0)
    assert finished.status == "succeeded"
    assert summary(events) == [
        ("status", "queued"),
        ("status", "running"),
        ("metrics", [[1]]),
        ("progress", 1),
        ("metrics", [[2]]),  # only the new point
        ("progress", 2),
        ("status", "succeeded"),  # last, after the final metrics
    ]


def test_a_stream_that_keeps_dropping_gives_way_to_polling() -> None:
    attempts = []

    def refuse() -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("connection refused")

    with scripted_client(polling_server(refuse)) as client:
        final = client.wait(JOB_ID, poll_interval=0)
    assert final.status == "succeeded" and len(attempts) == MAX_CONSECUTIVE_DROPS


def test_errors_and_timeouts_while_following() -> None:
    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": f"no job with id {JOB_ID!r}"})

    with scripted_client(missing) as client, pytest.raises(BackpropError) as error:
        list(client.stream(JOB_ID, poll_interval=0))
    assert error.value.status == 404 and "no job with id" in str(error.value)

    def denied(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "missing or invalid API key"})

    with scripted_client(denied) as client, pytest.raises(BackpropError) as error:
        list(client.stream(JOB_ID))
    assert error.value.status == 401 and "BACKPROP_API_KEY" in str(error.value)

    never_ends = polling_server(lambda: httpx.Response(404))
    with scripted_client(never_ends) as client, pytest.raises(TimeoutError, match="still"):
        client.wait(JOB_ID, timeout=0, poll_interval=0)


class KeptAliveStream(httpx.SyncByteStream):
    """One status frame, then only keep-alive comments (a job that says nothing new)."""

    def __iter__(self) -> Iterator[bytes]:
        yield frame("status", job("running"), "1")
        for _ in range(500):
            time.sleep(0.02)
            yield b": keep-alive\n\n"


def test_the_timeout_holds_on_a_stream_of_keep_alives() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, stream=KeptAliveStream())

    with scripted_client(handler) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"still running after 0\.3 s"):
            client.wait(JOB_ID, timeout=0.3)
        assert time.monotonic() - started < 5  # not when the stream ends, 10 s on


class SilentServer(ThreadingHTTPServer):
    """Answers with an event stream that sends nothing until released (a stalled server)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SilentStream)
        self.release = threading.Event()


class SilentStream(BaseHTTPRequestHandler):
    server: SilentServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.flush()
        self.server.release.wait(30)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_timeout_holds_on_a_silent_stream() -> None:
    server = SilentServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}", "bp_key") as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=r"still unknown after 0\.5 s"):
                client.wait(JOB_ID, timeout=0.5)
            assert time.monotonic() - started < 10  # not the 60 s a silent read may take
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
