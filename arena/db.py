"""Tables, engines and migrations. Alembic owns the schema; this module describes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from arena.errors import StorageError
from arena.lifecycle import BattleState, Outcome, Side

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


Time = sa.DateTime(timezone=True)

# Per-side numeric columns of a battle (`tokens_a`, `tokens_b`, ...); see `battles` below.
STYLE_COLUMNS = ("tokens", "length", "headers", "lists", "bold")

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

voters = sa.Table(
    "voters",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("last_seen_at", Time, nullable=False),
    # HMAC-SHA256 of the IP with a per-deployment salt; the raw IP is never stored.
    sa.Column("ip_hash", sa.String(64)),
    # Set by an administrator (`arena admin flag-voter`): the reason. The ratings job leaves
    # a flagged voter's votes out (docs/security.md).
    sa.Column("flagged", sa.Text),
)

# Banned client IPs, hashed like every stored IP (issue 8, §7).
bans = sa.Table(
    "bans",
    metadata,
    sa.Column("ip_hash", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", Time, nullable=False),
)

# What the moderation hook blocked, or let through unchecked when the endpoint failed open;
# `content` is NULL when the operator keeps no text ([integrity] moderation_store_text).
moderation_events = sa.Table(
    "moderation_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("voter_id", sa.String(64)),
    sa.Column("ip_hash", sa.String(64)),
    sa.Column("battle_id", sa.String(36)),
    sa.Column("action", sa.String(16), nullable=False),  # blocked | unchecked
    sa.Column("categories", sa.JSON),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("content", sa.Text),
)

battles = sa.Table(
    "battles",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("voter_id", sa.String(64), sa.ForeignKey("voters.id")),
    sa.Column("model_a", sa.String(128), nullable=False),
    sa.Column("model_b", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
    sa.Column("flags", sa.JSON, nullable=False),
    # 'arena' for battles played here, 'import' for votes brought in by `arena import`.
    sa.Column("source", sa.String(16), nullable=False, server_default="arena"),
    # Imported rows may come from non-anonymous battles; the ratings leave those out.
    sa.Column("anony", sa.Boolean, nullable=False, server_default=sa.true()),
    # List of tags (arena.categories); SQL NULL, not JSON null, until tagged: backfill looks for it.
    sa.Column("categories", sa.JSON(none_as_null=True)),
    sa.Column("language", sa.String(16)),
    # Hash of the normalised first prompt, for the ratings' prompt deduplication.
    sa.Column("prompt_hash", sa.String(32)),
    # Per side, summed over turns: completion tokens (reasoning included: the compute spent) and
    # the answer's style counts for style control (visible tokens, headers, list items, bold).
    *[sa.Column(f"{name}_{side}", sa.Integer) for name in STYLE_COLUMNS for side in ("a", "b")],
    # When the retention setting deleted this battle's prompts and answers; the vote stays.
    sa.Column("text_deleted_at", Time),
    # The arena process streaming its current turn (`instances.id`): when that process is gone,
    # the battle is abandoned at once rather than at the stale-battle sweep (issue 10).
    sa.Column("owner", sa.String(64)),
    sa.CheckConstraint(_in("status", BattleState), name="status"),
    sa.CheckConstraint("model_a <> model_b", name="distinct_models"),
    sa.CheckConstraint("source IN ('arena', 'import')", name="source"),
    sa.Index("ix_battles_created_at", "created_at"),
    # A reloaded page finds its voter's unvoted battle (issue 9).
    sa.Index("ix_battles_voter", "voter_id", "created_at"),
    sa.Index("ix_battles_status_owner", "status", "owner"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("battle_id", sa.String(36), sa.ForeignKey("battles.id"), nullable=False),
    sa.Column("side", sa.String(1), nullable=False),
    sa.Column("turn", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("model", sa.String(128)),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("reasoning", sa.Text),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("reasoning_tokens", sa.Integer),
    sa.Column("ttft_ms", sa.Float),  # first token of any kind, reasoning included
    sa.Column("answer_ms", sa.Float),  # first token of the answer proper
    sa.Column("duration_ms", sa.Float),
    sa.Column("finish_reason", sa.String(32)),
    sa.Column("error", sa.Text),
    # The model server's own error text (a body, a mid-stream error event): for the operator,
    # never shown to a voter or exported, since it can name the model (issue 7).
    sa.Column("error_detail", sa.Text),
    # Compute spent on this answer, summed over every sample and reward-model call (issue 7):
    # prompt, completion and reasoning tokens (`reasoning_source` says whether the server gave
    # the reasoning count or we counted it), samples, reward_calls, reward_tokens.
    sa.Column("usage", sa.JSON),
    sa.Column("endpoint", sa.String(512)),  # the replica that served it: `base_url#model`
    sa.Column("created_at", Time, nullable=False),
    sa.CheckConstraint(_in("side", Side), name="side"),
    sa.CheckConstraint("role IN ('user', 'assistant')", name="role"),
    sa.UniqueConstraint("battle_id", "side", "turn", "role", name="uq_messages_turn"),
)

# Answers chosen among several samples (best-of-N, self-consistency) keep every candidate.
candidates = sa.Table(
    "candidates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("messages.id"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("reasoning", sa.Text),
    sa.Column("score", sa.Float),
    sa.Column("chosen", sa.Boolean, nullable=False),
    sa.Column("usage", sa.JSON),
    sa.Column("endpoint", sa.String(512)),
    sa.Column("extracted", sa.Text),  # self-consistency: the sample's final answer, normalised
    sa.Column("step_scores", sa.JSON),  # process reward: the score of each step
    sa.Column("error", sa.Text),  # a sample that failed
    sa.UniqueConstraint("message_id", "position", name="uq_candidates_position"),
)

votes = sa.Table(
    "votes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Unique: the database itself refuses a second vote, whatever races above it.
    sa.Column("battle_id", sa.String(36), sa.ForeignKey("battles.id"), nullable=False, unique=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("voter_id", sa.String(64), sa.ForeignKey("voters.id")),
    sa.Column("ip_hash", sa.String(64)),
    sa.Column("created_at", Time, nullable=False),
    sa.CheckConstraint(_in("outcome", Outcome), name="outcome"),
    sa.Index("ix_votes_created_at", "created_at"),
)

# Leaderboard snapshots: append-only. One ratings run writes one row per (category, style
# control) in a single transaction, so readers see a whole run or none of it.
snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("style_control", sa.Boolean, nullable=False),
    sa.Column("cutoff_vote_id", sa.Integer),
    sa.Column("cutoff_at", Time),
    sa.Column("votes", sa.Integer, nullable=False),
    # gzip of the snapshot's JSON: matrices for hundreds of models, kept for every run.
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index("ix_snapshots_board", "category", "style_control", "id"),
)

# One row per periodic job: whoever holds an unexpired lease runs it, so several app
# processes on one database run each job once (arena/jobs.py).
# Every running arena process, with the last time it said it was alive (issue 10).
instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("seen_at", Time, nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64)),
    sa.Column("expires_at", Time),
    sa.Column("finished_at", Time),
)

# Models known only from imported votes: rated, never drawn for a battle.
rated_models = sa.Table(
    "rated_models",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("organization", sa.String(128), nullable=False, server_default=""),
    sa.Column("license", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", Time, nullable=False),
)


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; the busy timeout rides out short write locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _migrate(url: str, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    try:
        getattr(command, direction)(_alembic_config(url), revision)
    except CommandError as err:
        raise StorageError(f"migration {direction} to {revision!r} failed: {err}") from None
    except sa.exc.OperationalError as err:
        raise StorageError(f"cannot open the database: {_first_line(err)}") from None
    except sa.exc.ArgumentError:
        raise StorageError(f"not a database URL: {url.split('://', 1)[0]}://…") from None


def safe_url(url: str) -> str:
    """`url` as messages show it: the password masked."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return f"{url.split('://', 1)[0]}://…"


def _revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.DatabaseError as err:  # unreachable, or a file that is not a database
        raise StorageError(f"cannot open the database: {_first_line(err)}") from None


def _first_line(err: sa.exc.DBAPIError) -> str:
    """The driver's message without its hints (psycopg adds "Is the server running…")."""
    return (str(err.orig).strip().splitlines() or [type(err.orig).__name__])[0]


def current_revision(url: str) -> str | None:
    """The database's migration; None for a database without tables (a new one)."""
    try:
        engine = make_engine(url)
    except sa.exc.ArgumentError:
        raise StorageError(f"not a database URL: {safe_url(url)}") from None
    try:
        return _revision(engine)
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest migration, the one the code needs."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("")).get_current_head()


# An upgrade or downgrade returns the database's revision before and after it.
Revisions = tuple[str | None, str | None]


def upgrade(url: str, revision: str = "head") -> Revisions:
    before = current_revision(url)  # fails here, in one line, on a database it cannot read
    _migrate(url, "upgrade", revision)
    return before, current_revision(url)


def downgrade(url: str, revision: str) -> Revisions:
    before = current_revision(url)
    _migrate(url, "downgrade", revision)
    return before, current_revision(url)


def check_current(engine: Engine) -> None:
    """Refuse to serve on a database that is not at the newest migration."""
    head = head_revision()
    current = _revision(engine)
    if current != head:
        raise StorageError(
            f"the database is at migration {current or 'none'}, the code needs {head}: "
            "run `arena db upgrade`"
        )
