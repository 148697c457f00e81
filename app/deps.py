"""Typed dependencies: settings, a DB session, the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth import tenant_for_key
from app.config import Settings
from app.db.models import Tenant
from app.queue import JobQueue


def app_settings(request: Request) -> Settings:
    # Read from the app rather than overridden with `dependency_overrides`: any override
    # makes FastAPI re-resolve every dependency's signature on every request (~30% of a GET).
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

_bearer = HTTPBearer(auto_error=False, description="an API key: `backprop keys create`")


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


QueueDep = Annotated[JobQueue, Depends(get_queue)]


def current_tenant(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    tenant = tenant_for_key(session, credentials.credentials) if credentials else None
    if tenant is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    session.commit()  # end the read transaction (releases SQLite's lock); objects stay loaded
    return tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]
