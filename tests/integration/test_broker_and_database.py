"""What the service relies on in Redis and PostgreSQL: each queue gets only its own jobs,
and a database connection that the server dropped costs one 503, not a broken process."""

from __future__ import annotations

from pathlib import Path

import psycopg
import redis
from fastapi.testclient import TestClient

from app.auth import create_api_key
from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.migrate import upgrade_to_head
from app.main import create_app
from app.queue import QUEUES, JobQueue
from tests.servers import PostgresServer, RedisServer


def test_a_message_reaches_only_its_own_queue(redis_server: RedisServer, tmp_path: Path) -> None:
    url = redis_server.new_broker_url()
    queue = JobQueue(Settings(broker_url=url, data_dir=tmp_path))
    queue.send("job-for-gpu", "gpu")
    queue.send("job-for-cpu", "cpu")
    queue.send("another-for-cpu", "cpu")
    with redis.Redis.from_url(url) as client:
        depths = {name: client.llen(name) for name in QUEUES}
    assert depths == {"cpu": 2, "gpu": 1}


def test_a_dropped_database_connection_is_one_503_then_recovers(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database()
    upgrade_to_head(url)
    app = create_app(Settings(database_url=url, data_dir=tmp_path / "data"))
    with TestClient(app) as client:
        with transaction(app.state.sessionmaker) as session:
            headers = {"Authorization": f"Bearer {create_api_key(session, 'alice')}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200

        # The server ends every session of this database (as a restart or failover would).
        libpq_url = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

        dropped = client.get("/v1/jobs", headers=headers)
        assert dropped.status_code == 503, dropped.text
        assert dropped.headers["Retry-After"] == "1"
        assert "retry" in dropped.json()["detail"]
        assert client.get("/v1/jobs", headers=headers).status_code == 200
