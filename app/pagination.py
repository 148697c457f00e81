"""Keyset pagination, newest first, with opaque cursors (datasets, jobs, any table).

A cursor encodes the (created_at, id) of the last row a page showed; the next page is
the rows strictly before it in (created_at DESC, id DESC) order. Unlike OFFSET, a page
never skips or repeats a row when rows are inserted meanwhile, and each page costs one
index range scan (`ix_<table>_tenant_created` covers tenant_id, created_at, id).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import QueryableAttribute, Session

MAX_CURSOR_LENGTH = 200
_SEPARATOR = "|"


class Keyed(Protocol):
    """What a paginated row has: the sort key."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


RowT = TypeVar("RowT", bound=Keyed)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque, URL-safe token for the position just after (created_at, row_id)."""
    raw = f"{created_at.isoformat()}{_SEPARATOR}{row_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) inside a cursor made by `encode_cursor`.

    Raises:
      ValueError: for anything that `encode_cursor` did not make.
    """
    invalid = ValueError("not a cursor from this API; pass a page's next_cursor unchanged")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = raw.split(_SEPARATOR, 1)
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise invalid from exc
    if created_at.tzinfo is None or not row_id:
        raise invalid
    return created_at, row_id


def newest_first_page(
    session: Session,
    statement: Select[RowT],
    *,
    created_at: QueryableAttribute[datetime],
    id: QueryableAttribute[str],
    limit: int,
    cursor: str | None,
) -> tuple[list[RowT], str | None]:
    """One page of `statement`'s rows, newest first.

    Args:
      session: runs the query.
      statement: `select(Model).where(...)`, already filtered (tenant, status…), unordered.
      created_at, id: the model's columns to sort by, e.g. `Job.created_at`, `Job.id`.
      limit: the page size (≥ 1).
      cursor: a previous page's `next_cursor`, or None for the first page.
    Returns:
      (rows, next_cursor); next_cursor is None on the last page.
    Raises:
      ValueError: for a malformed cursor (`PageQuery` rejects those with a 422 first).
    """
    if cursor:
        at, last_id = decode_cursor(cursor)
        statement = statement.where(or_(created_at < at, and_(created_at == at, id < last_id)))
    statement = statement.order_by(created_at.desc(), id.desc()).limit(limit + 1)
    rows = list(session.scalars(statement))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)
