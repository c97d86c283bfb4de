"""leaderboard: snapshots, leases, rated models, battle categories and style counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 11:47:58.972918
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen here: a migration must not change when arena.db does.
STYLE_COLUMNS = ("tokens", "length", "headers", "lists", "bold")


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "rated_models",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("organization", sa.String(length=128), server_default="", nullable=False),
        sa.Column("license", sa.String(length=64), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rated_models")),
    )
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("style_control", sa.Boolean(), nullable=False),
        sa.Column("cutoff_vote_id", sa.Integer(), nullable=True),
        sa.Column("cutoff_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("votes", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_snapshots_board", ["category", "style_control", "id"], unique=False
        )

    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="arena", nullable=False)
        )
        batch_op.add_column(
            sa.Column("anony", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(sa.Column("categories", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("prompt_hash", sa.String(length=32), nullable=True))
        for name in STYLE_COLUMNS:
            for side in ("a", "b"):
                batch_op.add_column(sa.Column(f"{name}_{side}", sa.Integer(), nullable=True))
        batch_op.create_check_constraint("source", "source IN ('arena', 'import')")

    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.create_index("ix_votes_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_index("ix_votes_created_at")

    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_constraint("source", type_="check")
        for name in reversed(STYLE_COLUMNS):
            for side in ("b", "a"):
                batch_op.drop_column(f"{name}_{side}")
        for column in ("prompt_hash", "language", "categories", "anony", "source"):
            batch_op.drop_column(column)

    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_snapshots_board")

    op.drop_table("snapshots")
    op.drop_table("rated_models")
    op.drop_table("leases")
