"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 01:04:22.566105
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )
    op.create_table(
        "voters",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voters")),
    )
    op.create_table(
        "battles",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voter_id", sa.String(length=64), nullable=True),
        sa.Column("model_a", sa.String(length=128), nullable=False),
        sa.Column("model_b", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("turns", sa.Integer(), server_default="0", nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "status IN ('answering', 'awaiting_vote', 'failed', 'voted', 'abandoned')",
            name=op.f("ck_battles_status"),
        ),
        sa.CheckConstraint("model_a <> model_b", name=op.f("ck_battles_distinct_models")),
        sa.ForeignKeyConstraint(
            ["voter_id"], ["voters.id"], name=op.f("fk_battles_voter_id_voters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battles")),
    )
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.create_index("ix_battles_created_at", ["created_at"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("battle_id", sa.String(length=36), nullable=False),
        sa.Column("side", sa.String(length=1), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("answer_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_messages_role")),
        sa.CheckConstraint("side IN ('a', 'b')", name=op.f("ck_messages_side")),
        sa.ForeignKeyConstraint(
            ["battle_id"], ["battles.id"], name=op.f("fk_messages_battle_id_battles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("battle_id", "side", "turn", "role", name="uq_messages_turn"),
    )
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("battle_id", sa.String(length=36), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("voter_id", sa.String(length=64), nullable=True),
        sa.Column("ip_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('a', 'b', 'tie', 'both_bad')", name=op.f("ck_votes_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["battle_id"], ["battles.id"], name=op.f("fk_votes_battle_id_battles")
        ),
        sa.ForeignKeyConstraint(["voter_id"], ["voters.id"], name=op.f("fk_votes_voter_id_voters")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint("battle_id", name=op.f("uq_votes_battle_id")),
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("chosen", sa.Boolean(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_candidates_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint("message_id", "position", name="uq_candidates_position"),
    )


def downgrade() -> None:

    op.drop_table("candidates")
    op.drop_table("votes")
    op.drop_table("messages")
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_index("ix_battles_created_at")

    op.drop_table("battles")
    op.drop_table("voters")
    op.drop_table("meta")
