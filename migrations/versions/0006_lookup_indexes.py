"""indexes: a tenant's latest claim (fair share), an API key's prefix (its lookup)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 03:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_tenant_claimed", "jobs", ["tenant_id", "claimed_at"])
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_prefix", table_name="api_keys")
    op.drop_index("ix_jobs_tenant_claimed", table_name="jobs")
