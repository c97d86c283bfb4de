"""messages.endpoint and what a strategy's candidates carry (issue 7)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint", sa.String(512), nullable=True))
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint", sa.String(512), nullable=True))
        batch_op.add_column(sa.Column("extracted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("step_scores", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        for name in ("error", "step_scores", "extracted", "endpoint"):
            batch_op.drop_column(name)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("endpoint")
