"""job timings: when the latest attempt was claimed, and seconds per phase of it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.domain.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PHASE_COLUMNS = (
    "queued_seconds",
    "startup_seconds",
    "compile_seconds",
    "training_seconds",
    "finalizing_seconds",
    "total_seconds",
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("claimed_at", app.domain.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        for name in PHASE_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in reversed(PHASE_COLUMNS):
            batch.drop_column(name)
        batch.drop_column("claimed_at")
