"""The read path that polling clients hit: API keys cached per process, reads that take no
lock on SQLite, and one thread hand-off for a GET of a job."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.pool import NullPool, QueuePool

from app.auth import Caller, KeyCache, create_api_key
from app.config import Settings
from app.deps import SessionDep, TransactionLeftOpen
from app.domain.db.engine import POOL_SIZE, make_engine, reading, transaction
from app.domain.db.models import Job
from tests.app.test_jobs import submit
from tests.specs import IRIS_MLP

Headers = dict[str, str]


def test_key_cache_expires_and_keeps_only_valid_keys() -> None:
    cache = KeyCache(ttl=0.2, max_entries=2)
    alice, bob, carol = (Caller(f"id-{n}", n) for n in ("alice", "bob", "carol"))
    cache.put("a", alice)
    cache.put("b", bob)
    cache.put("c", carol)  # over max_entries: the oldest goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, bob, carol)
    time.sleep(0.25)
    assert cache.get("b") is None and cache.get("c") is None
    disabled = KeyCache(ttl=0)
    disabled.put("a", alice)
    assert disabled.get("a") is None


def test_a_new_key_works_at_once_and_a_wrong_one_is_rejected_every_time(
    client: TestClient, app: FastAPI, alice: Headers
) -> None:
    wrong = {"Authorization": "Bearer bp_not_a_key"}
    assert client.get("/v1/jobs", headers=wrong).status_code == 401
    with transaction(app.state.sessionmaker) as session:
        key = create_api_key(session, "dave")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/jobs", headers=wrong).status_code == 401


def test_reads_do_not_wait_for_a_writer_on_sqlite(
    client: TestClient, settings: Settings, alice: Headers
) -> None:
    job = submit(client, alice, IRIS_MLP).json()
    client.get(f"/v1/jobs/{job['id']}", headers=alice)  # the key is now cached
    writer = sqlite3.connect(settings.data_dir / "backprop.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    answers: list[int] = []
    try:
        reads = [f"/v1/jobs/{job['id']}", "/v1/jobs", f"/v1/jobs/{job['id']}/metrics"]
        thread = threading.Thread(
            target=lambda: answers.extend(client.get(u, headers=alice).status_code for u in reads)
        )
        thread.start()
        thread.join(timeout=10)  # SQLite's busy timeout is 30 s: a read that waited would show
        assert not thread.is_alive(), "a GET waited for the write lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert answers == [200, 200, 200]


def test_pool_sizes_apply_only_to_the_default_pool() -> None:
    url = "postgresql+psycopg://user@127.0.0.1:1/none"  # nothing connects here
    pooled, unpooled = make_engine(url), make_engine(url, poolclass=NullPool)
    assert isinstance(pooled.pool, QueuePool) and pooled.pool.size() == POOL_SIZE
    assert isinstance(unpooled.pool, NullPool)


def test_a_statement_outside_reading_or_begin_fails_instead_of_taking_a_lock(
    app: FastAPI,
) -> None:
    """The API's sessions never autobegin: a read must say it is one (or be in a write)."""

    @app.get("/test/unwrapped-read")
    def unwrapped_read(session: SessionDep) -> int:
        return len(session.scalars(select(Job.id)).all())

    @app.get("/test/wrapped-read")
    def wrapped_read(session: SessionDep) -> int:
        with reading(session):
            return len(session.scalars(select(Job.id)).all())

    with TestClient(app) as client:
        assert client.get("/test/wrapped-read").json() == 0
        with pytest.raises(InvalidRequestError, match=r"[Aa]utobegin"):
            client.get("/test/unwrapped-read")


def test_a_handler_that_leaves_a_transaction_open_fails_its_request(app: FastAPI) -> None:
    @app.get("/test/left-open")
    def left_open(session: SessionDep) -> int:
        session.begin()  # and never committed
        return len(session.scalars(select(Job.id)).all())

    with TestClient(app) as client, pytest.raises(TransactionLeftOpen, match="left-open"):
        client.get("/test/left-open")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/test/left-open").status_code == 500
