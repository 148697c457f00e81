"""api_keys.last_used_at, jobs.platform_interruptions and min_devices, workers.devices

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.domain.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_used_at", app.domain.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("platform_interruptions", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("min_devices", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("devices", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("devices")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("min_devices")
        batch_op.drop_column("platform_interruptions")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
