"""Alembic environment: the URL comes from Backprop's Settings, never from alembic.ini."""

from __future__ import annotations

from alembic import context

from app.config import Settings
from app.domain.db.engine import make_engine
from app.domain.db.models import Base

config = context.config
url = config.attributes.get("database_url") or Settings().resolved_database_url


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite can't ALTER much
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
