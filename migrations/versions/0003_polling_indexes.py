"""indexes for polling: jobs in queue order (a queued job's position is a short range
count) and metric points by job and time (an event stream's new points)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_queue_order", "jobs", ["status", "queue", "created_at", "id"], unique=False
    )
    op.create_index("ix_metrics_job_time", "metrics", ["job_id", "time"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_metrics_job_time", table_name="metrics")
    op.drop_index("ix_jobs_queue_order", table_name="jobs")
