"""Typed dependencies: settings, a DB session, the caller's tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth import Caller, KeyCache, hash_key, tenant_for_key
from app.config import Settings
from app.domain.db.engine import reading
from app.queue import JobQueue
from app.rate_limit import RateLimiter


def app_settings(request: Request) -> Settings:
    # Read from the app rather than overridden with `dependency_overrides`: any override
    # makes FastAPI re-resolve every dependency's signature on every request (~30% of a GET).
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

_bearer = HTTPBearer(auto_error=False, description="an API key: `backprop keys create`")


class TransactionLeftOpen(RuntimeError):
    """A handler ended with a database transaction still open: a bug, answered with 500."""


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for one handler. It never autobegins (see `make_sessionmaker`): services
    say what they do with `reading(session)` or `session.begin()`, and every such block
    ends before the handler does, which is checked here.

    Async so that FastAPI does not hand it to a thread (twice: open and close). Making a
    session does no I/O, and closing one does none either, since no transaction is open.
    """
    with request.app.state.sessionmaker() as session:
        yield session
        if session.in_transaction():
            raise TransactionLeftOpen(
                f"{request.method} {request.url.path} left a database transaction open; "
                "wrap its statements in `reading(session)` or `with session.begin():`"
            )


# scope="function": the check above runs when the handler returns, before the response is
# sent, so a handler that breaks the rule fails its own request.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


QueueDep = Annotated[JobQueue, Depends(get_queue)]


async def current_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The key's tenant, from the per-process key cache or one read in a worker thread."""
    caller = None
    if credentials is not None:
        digest = hash_key(credentials.credentials)
        cache: KeyCache = request.app.state.key_cache
        caller = cache.get(digest)
        if caller is None:
            caller = await run_in_threadpool(_look_up_key, request, credentials.credentials)
            if caller is not None:
                cache.put(digest, caller)
    if caller is not None and caller.key_id is not None:
        watch = request.app.state.key_watch
        if watch.is_revoked(caller.key_id):  # a lookup that raced the revocation cached it
            caller = None
        else:
            watch.note_use(caller.key_id)
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limiter: RateLimiter = request.app.state.rate_limiter
    if not limiter.allow(digest):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"this key made more than {limiter.per_second} requests in the last second "
            "(BACKPROP_RATE_LIMIT): slow down and retry",
            headers={"Retry-After": "1"},
        )
    return caller


def _look_up_key(request: Request, key: str) -> Caller | None:
    with request.app.state.sessionmaker() as session, reading(session):
        return tenant_for_key(session, key)


CurrentTenant = Annotated[Caller, Depends(current_tenant)]
