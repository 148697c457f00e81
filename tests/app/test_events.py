"""`GET /v1/jobs/{id}/events` over real HTTP (uvicorn in a thread), with the worker's side
simulated by writing its rows from another engine, as a worker process would."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, event, update

from app.auth import create_api_key
from app.config import Settings
from app.domain.db.engine import make_engine, make_sessionmaker, transaction
from app.domain.db.models import Job, Metric
from app.domain.db.types import utcnow
from app.services.events import JobEventHub
from app.services.events.server import EventStreamingServer
from tests.servers import free_port, wait_until
from tests.specs import mlp
from tests.sse import Event, events
from worker.db import upsert

# Events lag the worker's writes by at most ~1 s (API.md); allow for two busy cores.
LAG_SECONDS = 1.5
XOR = mlp("builtin:xor", [4, 2], activation="tanh", training={"epochs": 3})


@dataclass
class Live:
    """A running server, a tenant's client, and the worker's side of the database."""

    app: FastAPI
    http: httpx.Client
    worker_engine: Engine
    server: EventStreamingServer
    thread: threading.Thread

    def submit(self) -> str:
        response = self.http.post("/v1/jobs", json=XOR)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def stream(self, job_id: str, **kwargs: Any) -> Any:
        return self.http.stream("GET", f"/v1/jobs/{job_id}/events", **kwargs)

    def set_job(self, job_id: str, **values: Any) -> None:
        with transaction(make_sessionmaker(self.worker_engine)) as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    def record(self, job_id: str, points: dict[str, list[tuple[int, float]]]) -> datetime:
        """Upsert `{name: [(step, value)]}` as one flush of the worker does; returns its time."""
        now = utcnow()
        rows = [
            {"job_id": job_id, "name": name, "step": step, "epoch": 0, "value": value, "time": now}
            for name, series in points.items()
            for step, value in series
        ]
        with transaction(make_sessionmaker(self.worker_engine)) as session:
            upsert(
                session,
                Metric,
                rows,
                keys=["job_id", "name", "step"],
                update=["epoch", "value", "time"],
            )
        return now


@pytest.fixture
def live(app: FastAPI, settings: Settings) -> Iterator[Live]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = EventStreamingServer(config, app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 60, what="uvicorn to start")
    with transaction(app.state.sessionmaker) as session:
        key = create_api_key(session, "alice")
    worker_engine = make_engine(settings.resolved_database_url)
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    try:
        yield Live(app, http, worker_engine, server, thread)
    finally:
        http.close()
        server.should_exit = True
        thread.join(30)
        worker_engine.dispose()


class Reader:
    """The events of one stream, in order; each read is bounded by the client's timeout."""

    def __init__(self, response: httpx.Response):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        self._events = events(response)

    def next(self) -> Event:
        return next(self._events)  # the client's read timeout bounds the wait

    def expect(self, name: str) -> Event:
        got = self.next()
        assert got.event == name, got
        return got

    def ended(self) -> bool:
        return next(self._events, None) is None


def series(event: Event) -> dict[str, dict[str, list[Any]]]:
    return {s["name"]: s for s in event.data["series"]}


def progress(step: int, steps: int = 30) -> dict[str, Any]:
    return {
        "epoch": step // 10,
        "epochs": 3,
        "step": step,
        "steps": steps,
        "fraction": step / steps,
    }


def test_events_follow_the_job_in_order_and_the_stream_ends(live: Live) -> None:
    job_id = live.submit()
    lags = []
    with live.stream(job_id) as response:
        stream = Reader(response)
        first = stream.expect("status")
        assert first.data == live.http.get(f"/v1/jobs/{job_id}").json()  # the whole JobPublic
        assert first.data["status"] == "queued"

        written = time.monotonic()
        live.set_job(job_id, status="running", worker="w1", started_at=utcnow())
        running = stream.expect("status")
        lags.append(time.monotonic() - written)
        assert (running.data["status"], running.data["worker"]) == ("running", "w1")

        written = time.monotonic()
        live.record(job_id, {"loss": [(1, 0.9), (2, 0.8)]})
        live.set_job(job_id, progress=progress(2), eta_seconds=14.0)
        metrics = stream.expect("metrics")
        assert series(metrics)["loss"]["step"] == [1, 2]
        assert series(metrics)["loss"]["value"] == [0.9, 0.8]
        update_ = stream.expect("progress")
        lags.append(time.monotonic() - written)
        assert update_.data == {"progress": progress(2), "eta_seconds": 14.0}

        live.record(job_id, {"loss": [(3, 0.7)], "accuracy": [(3, 0.5)]})
        only_new = series(stream.expect("metrics"))
        assert {name: s["step"] for name, s in only_new.items()} == {"loss": [3], "accuracy": [3]}

        # The worker's end: its last points, then the terminal write with the final progress.
        live.record(job_id, {"loss": [(30, 0.1)], "accuracy": [(30, 1.0)]})
        live.set_job(job_id, status="succeeded", finished_at=utcnow(), progress=progress(30))
        assert series(stream.expect("metrics"))["loss"]["step"] == [30]
        assert stream.expect("progress").data["progress"]["fraction"] == 1.0
        done = stream.expect("status")
        assert done.data["status"] == "succeeded"
        assert stream.ended()
    assert max(lags) < LAG_SECONDS, lags


def test_a_reconnect_with_last_event_id_gets_only_what_came_after(live: Live) -> None:
    job_id = live.submit()
    live.set_job(job_id, status="running", worker="w1", started_at=utcnow())
    live.record(job_id, {"loss": [(1, 0.9), (2, 0.8), (3, 0.7)]})
    with live.stream(job_id) as response:
        stream = Reader(response)
        stream.expect("status")
        everything = stream.expect("metrics")
        assert series(everything)["loss"]["step"] == [1, 2, 3]  # all so far, at once
        last_id = everything.id
    assert last_id

    # While disconnected: new steps, and a resumed attempt rewriting step 3 after its checkpoint.
    live.record(job_id, {"loss": [(4, 0.6)]})
    live.record(job_id, {"loss": [(3, 0.65), (4, 0.55), (5, 0.5)]})
    for how in ({"headers": {"Last-Event-ID": last_id}}, {"params": {"last_event_id": last_id}}):
        with live.stream(job_id, **how) as response:
            stream = Reader(response)
            assert stream.expect("status").data["status"] == "running"  # a fresh status first
            resumed = series(stream.expect("metrics"))["loss"]
            assert (resumed["step"], resumed["value"]) == ([3, 4, 5], [0.65, 0.55, 0.5])


def test_a_resumed_attempt_streams_its_status_and_rewritten_steps(live: Live) -> None:
    job_id = live.submit()
    live.set_job(job_id, status="running", worker="w1", started_at=utcnow(), progress=progress(20))
    live.record(job_id, {"loss": [(10, 0.5), (20, 0.4)], "epoch_loss": [(10, 0.55)]})
    with live.stream(job_id) as response:
        stream = Reader(response)
        assert stream.expect("status").data["attempt"] == 1
        assert series(stream.expect("metrics"))["loss"]["step"] == [10, 20]

        # The worker dies; the reconciler re-queues attempt 2, which resumes from step 10.
        live.set_job(job_id, status="queued", attempt=2, worker=None)
        assert stream.expect("status").data == live.http.get(f"/v1/jobs/{job_id}").json()
        live.set_job(job_id, status="running", worker="w2")
        running = stream.expect("status").data
        assert (running["status"], running["attempt"], running["worker"]) == ("running", 2, "w2")

        live.record(job_id, {"loss": [(20, 0.45), (30, 0.3)], "epoch_loss": [(20, 0.42)]})
        live.set_job(job_id, progress=progress(30))
        rewritten = series(stream.expect("metrics"))
        assert (rewritten["loss"]["step"], rewritten["loss"]["value"]) == ([20, 30], [0.45, 0.3])
        assert rewritten["epoch_loss"]["step"] == [20]
        assert stream.expect("progress").data["progress"] == progress(30)

        live.set_job(
            job_id,
            status="failed",
            finished_at=utcnow(),
            error={"code": "internal", "message": "x"},
        )
        assert stream.expect("status").data["status"] == "failed"
        assert stream.ended()


def test_a_finished_job_sends_its_metrics_then_its_status_and_ends(live: Live) -> None:
    job_id = live.submit()
    live.record(job_id, {"loss": [(1, 0.9), (2, 0.8)]})
    live.set_job(job_id, status="cancelled", finished_at=utcnow(), progress=progress(2))
    with live.stream(job_id) as response:
        stream = Reader(response)
        assert series(stream.expect("metrics"))["loss"]["value"] == [0.9, 0.8]
        assert stream.expect("status").data["status"] == "cancelled"  # always the last event
        assert stream.ended()


def test_idle_streams_get_keep_alive_comments(live: Live) -> None:
    job_id = live.submit()
    live.app.state.events.keepalive_seconds = 0.2
    with live.stream(job_id) as response:
        assert response.status_code == 200
        received = events(response, comments=True)
        assert next(received).event == "status"
        assert next(received) == Event(None, ":", "keep-alive")


def test_the_stream_checks_its_caller_and_its_cursor(live: Live) -> None:
    job_id = live.submit()
    assert (
        live.http.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": ""}).status_code == 401
    )
    with transaction(live.app.state.sessionmaker) as session:
        bob = create_api_key(session, "bob")
    others = live.http.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {bob}"})
    assert (others.status_code, others.json()) == (404, {"detail": f"no job with id {job_id!r}"})

    bad = live.http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422
    [error] = bad.json()["detail"]
    assert error["loc"] == ["header", "Last-Event-ID"]
    assert "last event received" in error["msg"]
    bad = live.http.get(f"/v1/jobs/{job_id}/events", params={"last_event_id": "1.x"})
    assert bad.json()["detail"][0]["loc"] == ["query", "last_event_id"]


def progress_events(received: list[Event]) -> int:
    return sum(got.event == "progress" for got in received)


def test_many_watchers_share_one_poll(live: Live) -> None:
    """The DB work per tick does not grow with the number of watchers of a job."""
    watchers = 20
    job_id = live.submit()
    live.set_job(job_id, status="running", worker="w1", started_at=utcnow())
    received: list[list[Event]] = [[] for _ in range(watchers)]

    def watch(index: int) -> None:
        with live.stream(job_id) as response:
            for got in events(response):
                received[index].append(got)

    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    engine = live.app.state.sessionmaker.kw["bind"]
    hub = live.app.state.events
    with ThreadPoolExecutor(watchers) as pool:
        futures = [pool.submit(watch, i) for i in range(watchers)]
        wait_until(lambda: all(got for got in received), 30, what="every watcher's first status")
        event.listen(engine, "before_cursor_execute", count)
        try:
            ticks = hub.ticks
            for step in range(1, 6):
                live.record(job_id, {"loss": [(step, 1.0 / step)]})
                live.set_job(job_id, progress=progress(step))
                wait_until(
                    lambda step=step: all(progress_events(got) == step for got in received),
                    10,
                    what=f"progress {step} at every watcher",
                )
            ticks = hub.ticks - ticks
            steady = statements
        finally:
            event.remove(engine, "before_cursor_execute", count)
        live.set_job(job_id, status="succeeded", finished_at=utcnow())
        for future in futures:
            future.result(timeout=30)
    # Per tick: one SELECT of the jobs' status columns, one of their new points; one
    # watcher per statement would be 20 or more.
    assert ticks > 0 and steady <= 2 * ticks + 2, (steady, ticks)
    for got in received:
        assert [e.event for e in got] == ["status"] + ["metrics", "progress"] * 5 + ["status"]


def test_a_shutdown_ends_open_streams_instead_of_waiting_for_them(live: Live) -> None:
    job_id = live.submit()
    with live.stream(job_id) as response:
        stream = Reader(response)
        stream.expect("status")
        live.server.should_exit = True  # what Ctrl-C or SIGTERM does
        assert stream.ended()
    live.thread.join(10)
    assert not live.thread.is_alive()


def test_a_failed_poller_ends_its_streams_and_the_next_one_recovers(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = live.submit()

    def broken(updates: Any) -> None:
        raise RuntimeError("a bug in the poller")

    monkeypatch.setattr("app.services.events.hub._Rendered", broken)
    with live.stream(job_id) as response:
        assert Reader(response).ended()  # within the client's timeout, not never
    monkeypatch.undo()
    with live.stream(job_id) as response:
        assert Reader(response).expect("status").data["status"] == "queued"


def test_a_watcher_that_stops_reading_is_ended_instead_of_buffered(live: Live) -> None:
    job_id = live.submit()
    live.set_job(job_id, status="running", worker="w1", started_at=utcnow())

    async def follow_without_reading() -> list[str]:
        hub = JobEventHub(live.app.state.sessionmaker, poll_seconds=0.01, max_backlog_frames=3)
        stream = hub.stream(job_id, None)
        assert "event: status" in await anext(stream)  # now watching, then never reading
        deadline = time.monotonic() + 30
        step = 0
        while hub.watchers:
            assert time.monotonic() < deadline, "the hub kept buffering for a stalled reader"
            step += 1
            await asyncio.to_thread(live.set_job, job_id, progress=progress(step))
            await asyncio.sleep(0.02)  # yield to the poller (the deadline bounds the loop)
        rest = [chunk async for chunk in stream]
        await hub.close()
        return rest

    assert asyncio.run(follow_without_reading()) == []  # the backlog went; the client resumes
