"""Telling "the database is down or restarting" from "this statement is wrong".

The API answers the first kind with 503 and `Retry-After` (app/errors.py); the training
process retries its writes through it (worker/db.py). Anything else stays a bug.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


def is_database_unavailable(exc: BaseException) -> bool:
    """A dropped connection (`connection_invalidated`); the PostgreSQL driver's operational
    and interface errors (connection refused, the server shutting down or starting up, a
    connection closed under a query); SQLite's lock held beyond its busy timeout."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    driver = type(exc.orig).__module__.split(".")[0]
    return driver == "psycopg" or "database is locked" in str(exc.orig)
