"""integrity: voter flags, IP bans, moderation events, text retention

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bans",
        sa.Column("ip_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ip_hash", name=op.f("pk_bans")),
    )
    op.create_table(
        "moderation_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voter_id", sa.String(length=64), nullable=True),
        sa.Column("ip_hash", sa.String(length=64), nullable=True),
        sa.Column("battle_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_events")),
    )
    with op.batch_alter_table("voters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flagged", sa.Text(), nullable=True))
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_column("text_deleted_at")
    with op.batch_alter_table("voters", schema=None) as batch_op:
        batch_op.drop_column("flagged")
    op.drop_table("moderation_events")
    op.drop_table("bans")
