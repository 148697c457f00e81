"""`JobEventHub`: one poller per API process feeds every job event stream.

Every `poll_seconds` (0.1 s) one background task reads the state and new metric points of
all watched jobs in a few statements (`read_updates`), whatever the number of watchers,
and hands each watcher its own events through an asyncio queue. The poller runs only
while someone watches. A new watcher wakes it at once, so the first event comes without
waiting for a tick.

Per watcher, in one tick: a status that is not terminal first (every new watcher gets one),
then new metric points, then progress, and a terminal status last, after which its
stream ends. A job that has already finished therefore sends its metrics before its
status: the terminal status is always the last event.

A stream ends early, and its client resumes with `Last-Event-ID`, when its client stops
reading (so that its queue cannot grow without bound) or when the poller fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.domain.values import JobProgress
from app.services.events.cursor import EventCursor
from app.services.events.frames import KEEPALIVE, frame, metrics_data, progress_data
from app.services.events.reads import JobState, StatusKey, Updates, Watch, read_updates

log = logging.getLogger(__name__)

# Events lag the workers' writes by at most this plus one read. A tenth of a second: a
# small job's whole run takes about a second, and half a second of it was this lag; the
# poll is two statements for all watched jobs, and runs only while someone watches.
POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 15.0
# Frames queued for a client that stops reading (its socket full) before its stream is
# ended instead: it reconnects with its Last-Event-ID and gets the same in a few frames.
MAX_BACKLOG_FRAMES = 256


class _Watcher:
    """One open stream: what it has been sent, and its queue of frames (None: the end)."""

    def __init__(self, job_id: str, cursor: EventCursor):
        self.job_id = job_id
        self.cursor = cursor
        self.seen_status: StatusKey | None = None
        self.seen_progress: JobProgress | None = None
        self.frames: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent = 0

    def send(self, event: str, data: str) -> None:
        self.sent += 1
        self.frames.put_nowait(frame(event, self.cursor.event_id(self.sent), data))

    def end(self) -> None:
        self.frames.put_nowait(None)

    def drop_backlog(self) -> None:
        """Forget the frames not yet sent: a resume from the last one sent brings them back."""
        while not self.frames.empty():
            self.frames.get_nowait()


class JobEventHub:
    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        poll_seconds: float = POLL_SECONDS,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        max_backlog_frames: int = MAX_BACKLOG_FRAMES,
    ):
        self.factory = factory
        self.poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self.max_backlog_frames = max_backlog_frames
        self.ticks = 0  # polls done (tests compare the DB work with it)
        self._watchers: set[_Watcher] = set()
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    async def stream(self, job_id: str, cursor: EventCursor | None) -> AsyncIterator[str]:
        """The text/event-stream of one watcher of `job_id`, from `cursor` (None: the start)."""
        watcher = self._watch(job_id, cursor or EventCursor())
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(watcher.frames.get(), self.keepalive_seconds)
                except TimeoutError:
                    yield KEEPALIVE  # also how a proxy, and the server, notice a dead client
                    continue
                if chunk is None:
                    return
                yield chunk
        finally:
            self._watchers.discard(watcher)

    def end_streams(self) -> None:
        """End every stream now and refuse new ones: the server is shutting down, and
        waits for open responses to finish. Clients reconnect (to another instance)."""
        self._closed = True
        for watcher in self._watchers:
            watcher.end()
        self._watchers.clear()

    async def close(self) -> None:
        """End every stream and stop polling (waiting for a read in flight)."""
        self.end_streams()
        if self._poller is not None:
            self._poller.cancel()
            with suppress(asyncio.CancelledError):
                await self._poller

    def _watch(self, job_id: str, cursor: EventCursor) -> _Watcher:
        watcher = _Watcher(job_id, cursor)
        if self._closed:
            watcher.end()
            return watcher
        self._watchers.add(watcher)
        self._wake.set()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return watcher

    async def _poll(self) -> None:
        try:
            while self._watchers:
                await self._tick()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        except Exception:
            # Nothing would feed the open streams any more: end them, so that their clients
            # reconnect (and the next watcher starts a new poller) instead of waiting forever.
            log.exception("the job event poller failed; ending its streams")
            for watcher in list(self._watchers):
                self._finish(watcher)

    async def _tick(self) -> None:
        self._wake.clear()
        watchers = list(self._watchers)
        updates = await self._read(watchers)
        if updates is not None:
            rendered = _Rendered(updates)
            for watcher in watchers:
                if watcher in self._watchers:
                    self._deliver_or_end(watcher, rendered)
        self.ticks += 1

    async def _read(self, watchers: list[_Watcher]) -> Updates | None:
        """`read_updates` in a thread; a cancel waits for it, so the engine outlives it."""
        work = asyncio.ensure_future(
            asyncio.to_thread(read_updates, self.factory, _watches(watchers))
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            raise
        except Exception:
            log.exception("reading job events failed; retrying in %.1f s", self.poll_seconds)
            return None

    def _deliver_or_end(self, watcher: _Watcher, rendered: _Rendered) -> None:
        try:
            self._deliver(watcher, rendered)
        except Exception:  # one job's bad row must not stop every stream; its client retries
            log.exception("job %s: could not build its events; ending the stream", watcher.job_id)
            self._finish(watcher)
            return
        if watcher.frames.qsize() > self.max_backlog_frames:
            log.info("job %s: a watcher stopped reading; ending its stream", watcher.job_id)
            watcher.drop_backlog()
            self._finish(watcher)

    def _deliver(self, watcher: _Watcher, rendered: _Rendered) -> None:
        job_id = watcher.job_id
        state = rendered.updates.states.get(job_id)
        if state is None:  # deleted with its tenant: nothing more will come
            self._finish(watcher)
            return
        terminal = state.status.terminal
        if watcher.seen_status != state.key and not terminal:
            self._send_status(watcher, rendered, state)
        new_points = rendered.metrics(job_id, watcher.cursor.metrics_until)
        if new_points is not None:
            watcher.cursor, data = new_points
            watcher.send("metrics", data)
        # A new watcher of a finished job gets the progress inside its one status event.
        seen_any = watcher.seen_status is not None
        if seen_any and state.progress is not None and state.progress != watcher.seen_progress:
            watcher.seen_progress = state.progress
            watcher.send("progress", rendered.progress(job_id))
        if terminal:
            self._send_status(watcher, rendered, state)
            self._finish(watcher)

    def _send_status(self, watcher: _Watcher, rendered: _Rendered, state: JobState) -> None:
        watcher.seen_status = state.key
        watcher.seen_progress = state.progress  # the status event holds the progress
        watcher.send("status", rendered.status(watcher.job_id))

    def _finish(self, watcher: _Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.end()


class _Rendered:
    """One tick's event data, each piece serialised once however many watchers get it."""

    def __init__(self, updates: Updates):
        self.updates = updates
        self._cache: dict[tuple[Any, ...], Any] = {}

    def status(self, job_id: str) -> str:
        return self._once(("status", job_id), self.updates.publics[job_id].model_dump_json)

    def progress(self, job_id: str) -> str:
        return self._once(("progress", job_id), lambda: progress_data(self.updates.states[job_id]))

    def metrics(self, job_id: str, since: datetime | None) -> tuple[EventCursor, str] | None:
        """The points after `since` and the position after them; None when there are none."""

        def render() -> tuple[EventCursor, str] | None:
            points = self.updates.points.get(job_id, [])
            new = points if since is None else [point for point in points if point.time > since]
            if not new:
                return None
            return EventCursor(max(point.time for point in new)), metrics_data(new)

        return self._once(("metrics", job_id, since), render)

    def _once(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def _watches(watchers: list[_Watcher]) -> list[Watch]:
    by_job: dict[str, list[_Watcher]] = {}
    for watcher in watchers:
        by_job.setdefault(watcher.job_id, []).append(watcher)
    watches = []
    for job_id, group in by_job.items():
        positions = [w.cursor.metrics_until for w in group]
        since = None if None in positions else min(p for p in positions if p is not None)
        watches.append(Watch(job_id, since, frozenset(w.seen_status for w in group)))
    return watches
