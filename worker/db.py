"""Insert-or-update for PostgreSQL and SQLite, so rewriting a row never duplicates it, and
a bounded retry for writes that must outlive a database restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.domain.db.models import Base
from app.domain.db.outage import is_database_unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Rows per statement: well under SQLite's bound-parameter limit for our widest rows.
UPSERT_BATCH = 500


def upsert(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert `rows`; where one with the same `keys` exists, overwrite its `update` columns.

    `rows` must not repeat a key (PostgreSQL refuses to update one row twice in a statement).
    """
    dialect = session.get_bind().dialect.name
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - the service supports PostgreSQL and SQLite only
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    for start in range(0, len(rows), UPSERT_BATCH):
        statement = insert(model)
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={column: statement.excluded[column] for column in update},
        )
        session.execute(statement, list(rows[start : start + UPSERT_BATCH]))


def retry_while_unavailable(
    call: Callable[[], T],
    *,
    seconds: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`call()`, called again while it fails because the database is down or restarting
    (`is_database_unavailable`), for at most `seconds`; then its last error is raised.

    Each try is a transaction of its own that either committed or rolled back, so trying
    again never writes anything twice. Waits grow from 0.2 s to 2 s between tries.
    """
    deadline = clock() + seconds
    wait = 0.2
    while True:
        try:
            return call()
        except DBAPIError as exc:
            if not is_database_unavailable(exc) or clock() + wait > deadline:
                raise
            log.warning("%s: the database is unavailable; retrying in %.1f s", what, wait)
        sleep(wait)
        wait = min(wait * 2, 2.0)
