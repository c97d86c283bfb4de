"""an index on battles by voter: a reloaded page finds its unvoted battle (issue 9)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 18:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_battles_voter", "battles", ["voter_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_battles_voter", table_name="battles")
