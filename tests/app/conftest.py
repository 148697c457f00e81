"""API test fixtures: a migrated database per test, an app, and two tenants' keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth import create_api_key
from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.migrate import upgrade_to_head
from app.main import create_app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults (SQLite + filesystem broker) in a fresh data directory."""
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=2 * 1024 * 1024)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _key_for(app: FastAPI, tenant: str) -> str:
    with transaction(app.state.sessionmaker) as session:
        return create_api_key(session, tenant)


@pytest.fixture
def alice(client: TestClient, app: FastAPI) -> dict[str, str]:
    """Authorization headers of tenant "alice"."""
    return {"Authorization": f"Bearer {_key_for(app, 'alice')}"}


@pytest.fixture
def bob(client: TestClient, app: FastAPI) -> dict[str, str]:
    """Authorization headers of tenant "bob", to check that tenants never see each other."""
    return {"Authorization": f"Bearer {_key_for(app, 'bob')}"}
