"""What each API process learns about keys in the background: revocations, and use.

Keys are cached per process (`app.auth.KeyCache`) so that a poll costs no database read.
A revocation is made elsewhere (`backprop keys revoke`, another process, another host), so
every API process polls for it: one count of the revoked keys every `REVOCATION_POLL_SECONDS`.
When the count changes, the process forgets every key it trusted (the next request with a
still valid key reads it again) and ends the open event streams of the keys just revoked.
A count rather than the newest `revoked_at`, so a revoking host whose clock lags is not missed.

`last_used_at` is written the same way, off the request path: a request only notes its key
in memory, and the notes are written every `LAST_USED_FLUSH_SECONDS` and at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import datetime

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.auth import KeyCache
from app.domain.db.engine import reading, transaction
from app.domain.db.models import ApiKey
from app.domain.db.types import utcnow

log = logging.getLogger(__name__)

REVOCATION_POLL_SECONDS = 0.5
LAST_USED_FLUSH_SECONDS = 10.0


class KeyWatch:
    def __init__(self, factory: sessionmaker[Session], cache: KeyCache):
        self.factory = factory
        self.cache = cache
        self._revoked_count: int | None = None
        self._revoked: set[str] = set()
        self._streams: dict[str, set[asyncio.Event]] = {}  # key id → its open streams' ends
        self._used: dict[str, datetime] = {}  # key id → last request, not yet written

    # -- the request path: no I/O --------------------------------------------------------

    def note_use(self, key_id: str) -> None:
        self._used[key_id] = utcnow()

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self._revoked

    async def until_revoked(
        self, key_id: str | None, stream: AsyncIterator[str]
    ) -> AsyncIterator[str]:
        """`stream`, ended (and closed) as soon as this process learns `key_id` is revoked."""
        if key_id is None:
            async for item in stream:
                yield item
            return
        revoked = asyncio.Event()
        self._streams.setdefault(key_id, set()).add(revoked)
        revocation = asyncio.ensure_future(revoked.wait())
        step: asyncio.Future[str] | None = None
        try:
            while not self.is_revoked(key_id):
                step = asyncio.ensure_future(anext(stream))
                await asyncio.wait({step, revocation}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done() or isinstance(step.exception(), StopAsyncIteration):
                    return
                item, step = step.result(), None
                yield item
        finally:
            # Also when the client went away: the server cancels us mid-wait.
            revocation.cancel()
            if step is not None and not step.done():
                step.cancel()
                with suppress(BaseException):
                    await step
            self._streams[key_id].discard(revoked)
            if not self._streams[key_id]:
                del self._streams[key_id]
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- the background task -------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; a database outage only delays what it learns."""
        since_flush = 0.0
        while True:
            try:
                self.learn_revoked(await run_in_threadpool(self.read_revoked))
                if since_flush >= LAST_USED_FLUSH_SECONDS:
                    since_flush = 0.0
                    used, self._used = self._used, {}  # swapped here, on the event loop
                    await run_in_threadpool(self.flush_use, used)
            except Exception:  # a database outage, or a bug: this task must outlive both
                log.warning("could not check keys; retrying", exc_info=True)
            await asyncio.sleep(REVOCATION_POLL_SECONDS)
            since_flush += REVOCATION_POLL_SECONDS

    def read_revoked(self) -> tuple[int, set[str]] | None:
        """(count, ids) of the revoked keys; None when the count has not changed (in a thread)."""
        with self.factory() as session, reading(session):
            count = session.scalar(select(func.count()).where(ApiKey.revoked_at.is_not(None)))
            if count == self._revoked_count:
                return None
            return count or 0, set(
                session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_not(None)))
            )

    def learn_revoked(self, read: tuple[int, set[str]] | None) -> None:
        """On the event loop, since it wakes the streams' waits."""
        if read is None:
            return
        first = self._revoked_count is None
        new = read[1] - self._revoked
        self._revoked_count, self._revoked = read
        self.cache.clear()
        for key_id in new:
            for ended in self._streams.get(key_id, ()):
                ended.set()
        if new and not first:
            log.info("keys revoked: %s; their requests and streams are refused", sorted(new))

    def flush_use(self, used: dict[str, datetime] | None = None) -> None:
        """Write the noted uses (by default all of them, taken now); on a failure they are
        noted again, unless newer ones came meanwhile."""
        if used is None:
            used, self._used = self._used, {}
        if not used:
            return
        try:
            with transaction(self.factory) as session:
                for key_id, when in used.items():
                    session.execute(
                        update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
                    )
        except SQLAlchemyError:
            for key_id, when in used.items():
                self._used.setdefault(key_id, when)
            raise
