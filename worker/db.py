"""Insert-or-update for PostgreSQL and SQLite, so rewriting a row never duplicates it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.domain.db.models import Base

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
