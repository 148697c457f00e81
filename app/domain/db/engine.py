"""Engine and session factories (no import-time side effects: both take Settings)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Enough connections for FastAPI's 40 worker threads, so a burst never opens (and closes)
# connections per request; PostgreSQL forks a process for each new one.
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 30
POOL_RECYCLE_SECONDS = 1800
# A `reading()` block on SQLite: its statements run without BEGIN IMMEDIATE (see make_engine).
_READING = "backprop_reading"


PG_CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or SQLite.

    SQLite gets WAL (readers never block the writer), a busy timeout, and `BEGIN IMMEDIATE`
    for every transaction: taking the write lock up front means two processes never both
    hold a read lock and then deadlock upgrading it, which SQLite reports as "database is
    locked" without waiting.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        # No pre-ping: it costs a round trip per checkout, as much as a GET's one query.
        # A connection the server dropped fails one request (503, see app.errors) and the
        # pool then replaces every connection older than the failure.
        pooling: dict[str, Any] = {"pool_recycle": POOL_RECYCLE_SECONDS}
        # A host that drops packets (not one that refuses) would otherwise hang a request
        # for the OS's TCP timeout; this bounds it, and the request gets its 503.
        pooling["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS}
        if "poolclass" not in kwargs:  # sizes only mean something to the default QueuePool
            pooling |= {"pool_size": POOL_SIZE, "max_overflow": POOL_MAX_OVERFLOW}
        return create_engine(url, **{**pooling, **kwargs})
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not connection.get_execution_options().get(_READING):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class RoutingSession(Session):
    """A Session whose `reading()` blocks run on its engine's autocommit twin.

    The twin is a second engine with connections that stay in autocommit, so a read pays
    neither BEGIN/COMMIT round trips nor switching a pooled connection in and out of
    autocommit (both cost as much as the read itself). Objects read stay in this session,
    so a write after a read (cancel after the lookup) works on the same instances.
    """

    def __init__(self, *args: Any, reader: Engine | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reader = reader
        self.reading = False

    def get_bind(self, mapper: Any = None, **kwargs: Any) -> Any:
        if self.reading and self.reader is not None:
            return self.reader
        return super().get_bind(mapper, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that never begin a transaction by themselves (`autobegin=False`): every
    statement must sit inside `reading(session)` or `session.begin()`, so a read that
    forgot to say so fails at once instead of taking SQLite's write lock (and holding a
    PostgreSQL transaction) until the session closes."""
    reader = _reader_engine(engine)
    return sessionmaker(
        engine, class_=RoutingSession, reader=reader, expire_on_commit=False, autobegin=False
    )


def _reader_engine(engine: Engine) -> Engine:
    if engine.dialect.name == "sqlite":
        # The same pool; the "begin" listener skips BEGIN IMMEDIATE for these connections.
        return engine.execution_options(**{_READING: True})
    url = engine.url.render_as_string(hide_password=False)
    reader = make_engine(url, isolation_level="AUTOCOMMIT")

    @event.listens_for(engine, "engine_disposed")
    def _dispose_reader(_engine: Any) -> None:
        reader.dispose()

    return reader


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(session: Session) -> Iterator[Session]:
    """A unit of reads without a database transaction around them: each statement sees the
    data committed when it runs, which is all a GET needs.

    It saves the BEGIN and COMMIT round trips on PostgreSQL (autocommit) and, on SQLite, the
    write lock that every transaction takes up front there (see `make_engine`), so readers
    never queue behind a writer. A session not made by `make_sessionmaker` reads in an
    ordinary transaction.
    """
    if not isinstance(session, RoutingSession):
        with session.begin():
            yield session
        return
    session.reading = True
    try:
        with session.begin():
            yield session
    finally:
        session.reading = False
