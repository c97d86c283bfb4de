"""Battles between the database and interchange files: `arena import` and the battle export.

Import streams: rows are read, checked and written in chunks, so a file of millions of battles
never sits in memory. Imported battles are ordinary voted battles marked `source = 'import'`;
their id is derived from the row's content, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import multiprocessing
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from arena import db
from arena.categories import Tagger
from arena.config import ArenaConfig
from arena.errors import ApiParameterError, ImportFormatError
from arena.interchange import BattleRow, StyleCounts, read_battles
from arena.lifecycle import BattleState, Outcome
from arena.store import MULTI_TURN, prompt_hash

CHUNK = 10000
# Arena's own exports carry battle ids in this form; other arenas' question ids do not.
_ARENA_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Public clean-battle files name languages in English; categories use ISO 639-1 codes.
_LANGUAGE_CODES = {
    "english": "en", "chinese": "zh", "russian": "ru", "german": "de", "spanish": "es",
    "french": "fr", "japanese": "ja", "korean": "ko", "portuguese": "pt", "italian": "it",
    "polish": "pl", "vietnamese": "vi", "arabic": "ar", "turkish": "tr", "dutch": "nl",
    "indonesian": "id", "ukrainian": "uk", "persian": "fa", "hungarian": "hu", "czech": "cs",
    "hebrew": "he", "swedish": "sv", "greek": "el", "hindi": "hi", "thai": "th",
}  # fmt: skip


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    already_present: int = 0
    self_battles: int = 0
    new_models: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"read {self.read} rows",
            f"added {self.added} votes",
            f"{self.already_present} already present",
        ]
        if self.self_battles:
            parts.append(f"skipped {self.self_battles} where a model fought itself")
        if self.new_models:
            parts.append(f"{len(self.new_models)} new rating-only models")
        return ", ".join(parts)


def language_code(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip().lower()
    if text in ("unknown", "none", "und"):
        return None
    code = _LANGUAGE_CODES.get(text, text)
    # A code, not free text: anything else would become a category of its own.
    return code if re.fullmatch(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})?", code) else None


def battle_id(row: BattleRow, number: int) -> str:
    """The id an imported row gets: its own if it came from an Arena export, otherwise one
    derived from its content (and, when it has neither time nor question id, its row number,
    so that identical minimal rows stay distinct)."""
    from arena.interchange import row_key

    if row.question_id and _ARENA_ID.match(row.question_id):
        return row.question_id
    key = row_key(row)
    if row.tstamp is None and row.question_id is None:
        key = hashlib.sha256(f"{key}#{number}".encode()).hexdigest()
    # Time first, as in a UUIDv7: public files run in time order, so new ids land at the end
    # of the primary-key index instead of all over it (the import's main cost was random
    # index writes). Still a pure function of the row, so a second import adds nothing.
    millis = 0 if row.tstamp is None else int(row.tstamp * 1000) % (1 << 48)
    return str(uuid.UUID(f"{millis:012x}{key[:20]}"))


# Column names of each side's counts, in db.STYLE_COLUMNS order.
_STYLE_KEYS = {side: [f"{name}_{side}" for name in db.STYLE_COLUMNS] for side in ("a", "b")}


def _battle_values(
    row: BattleRow, ident: str, tagger: Tagger | None, when: datetime
) -> dict[str, Any]:
    categories = set(row.categories)
    language = language_code(row.language)
    prompt = row.prompt
    if prompt and tagger is not None and not row.categories:
        tags = tagger.tag(prompt)
        categories |= tags.categories
        language = language or tags.language
    if row.turn > 1:
        categories.add(MULTI_TURN)
    values: dict[str, Any] = {
        "id": ident,
        "created_at": when,
        "updated_at": when,
        "voter_id": None,
        "model_a": row.model_a,
        "model_b": row.model_b,
        "status": BattleState.VOTED.value,
        "turns": max(1, row.turn),
        # The source's voter label, kept as given so an export of this row says it again.
        "flags": {"judge": row.judge} if row.judge else {},
        "source": "import",
        "anony": row.anony,
        "categories": sorted(categories),
        "language": language,
        "prompt_hash": prompt_hash(prompt) if prompt else None,
    }
    for keys, style in ((_STYLE_KEYS["a"], row.style_a), (_STYLE_KEYS["b"], row.style_b)):
        if style is None:
            values.update(dict.fromkeys(keys))
        else:  # tokens, length, headers, lists, bold: the file knows visible tokens only
            t = style.tokens
            values.update(zip(keys, (t, t, style.headers, style.lists, style.bold), strict=True))
    return values


def _messages(row: BattleRow, ident: str, when: datetime) -> list[dict[str, Any]]:
    out = []
    for side, conv in (("a", row.conversation_a), ("b", row.conversation_b)):
        turn = 0
        for role, content in conv or ():
            if role not in ("user", "assistant"):
                continue
            if role == "user":
                turn += 1
            out.append(
                {
                    "battle_id": ident,
                    "side": side,
                    "turn": max(turn, 1),
                    "role": role,
                    "model": (row.model_a if side == "a" else row.model_b)
                    if role == "assistant"
                    else None,
                    "content": content,
                    "created_at": when,
                }
            )
    # The table allows one message per (side, turn, role): keep the first of any repeat.
    seen: set[tuple[Any, ...]] = set()
    unique = []
    for m in out:
        key = (m["side"], m["turn"], m["role"])
        if key not in seen:
            seen.add(key)
            unique.append(m)
    return unique


@dataclass
class _Prepared:
    """A chunk of rows ready for the driver; the writer drops the battles already present."""

    ids: list[str]
    models: set[str]
    battles: tuple[list[str], list[tuple[Any, ...]]]
    votes: tuple[list[str], list[tuple[Any, ...]]]
    messages: tuple[list[str], list[tuple[Any, ...]]]
    read: int  # rows read so far, this chunk included
    self_battles: int


def _prepare(
    chunk: Sequence[tuple[int, BattleRow]],
    models: set[str],
    tagger: Tagger | None,
    dialect: str,
    read: int,
    self_battles: int,
) -> _Prepared:
    now = datetime.now(UTC)
    ids: list[str] = []
    battles: list[dict[str, Any]] = []
    votes: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for number, row in chunk:
        ident = battle_id(row, number)
        when = datetime.fromtimestamp(row.tstamp, UTC) if row.tstamp is not None else now
        ids.append(ident)
        battles.append(_battle_values(row, ident, tagger, when))
        votes.append(
            {"battle_id": ident, "outcome": Outcome(row.outcome).value, "created_at": when}
        )
        messages.extend(_messages(row, ident, when))
    return _Prepared(
        ids,
        set(models),
        driver_rows(db.battles, battles, dialect),
        driver_rows(db.votes, votes, dialect),
        driver_rows(db.messages, messages, dialect),
        read,
        self_battles,
    )


def _write(conn: Connection, chunk: _Prepared, config: ArenaConfig, report: ImportReport) -> None:
    report.new_models.extend(_add_models(conn, chunk.models, config))
    existing = set(
        conn.scalars(sa.select(db.battles.c.id).where(db.battles.c.id.in_(set(chunk.ids)))).all()
    )
    keep = []
    for k, ident in enumerate(chunk.ids):
        if ident in existing:
            report.already_present += 1
            continue
        existing.add(ident)  # a repeat within the file is present once
        keep.append(k)
    for table, (names, values) in ((db.battles, chunk.battles), (db.votes, chunk.votes)):
        insert_rows(conn, table, names, [values[k] for k in keep])
    names, values = chunk.messages
    if values:
        kept = {chunk.ids[k] for k in keep}
        at = names.index("battle_id")
        insert_rows(conn, db.messages, names, [v for v in values if v[at] in kept])
    report.added += len(keep)
    report.read, report.self_battles = chunk.read, chunk.self_battles


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    try:  # flags and tag lists repeat across rows: encode each distinct one once
        return _json_cached(tuple(value.items()) if isinstance(value, dict) else tuple(value))
    except TypeError:  # something unhashable inside
        return json.dumps(value)


@functools.lru_cache(maxsize=1024)
def _json_cached(key: tuple[Any, ...]) -> str:
    if key and isinstance(key[0], tuple):
        return json.dumps(dict(key))
    return json.dumps(list(key))


@functools.lru_cache(maxsize=1 << 14)  # a chunk's times, battles and votes alike
def _sqlite_time(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME text form; the values are UTC. A row's three timestamps
    # are one value, so the cache formats it once.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _converter(column: sa.Column[Any], dialect: str) -> Callable[[Any], Any] | None:
    """How SQLAlchemy would store a value of this column; None when as it is."""
    if isinstance(column.type, sa.JSON):
        return _json_text
    if dialect == "sqlite" and isinstance(column.type, sa.DateTime):
        return lambda v: None if v is None else _sqlite_time(v)
    if dialect == "sqlite" and isinstance(column.type, sa.Boolean):
        return lambda v: None if v is None else int(v)
    return None


def driver_rows(
    table: sa.Table, rows: Sequence[dict[str, Any]], dialect: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Rows as the driver takes them: values converted as SQLAlchemy would store them.

    Core's per-row bind processing cost more than SQLite itself at a million rows; the column
    types here are few and plain, so the conversion is too. Column by column, so that only the
    columns that need it are converted.
    """
    names = list(rows[0]) if rows else []
    columns = []
    for name in names:
        values = [row[name] for row in rows]
        convert = _converter(table.c[name], dialect)
        columns.append(values if convert is None else list(map(convert, values)))
    return names, list(zip(*columns, strict=True))


def insert_rows(
    conn: Connection, table: sa.Table, names: list[str], values: list[tuple[Any, ...]]
) -> None:
    """executemany at the driver."""
    if not values:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    conn.exec_driver_sql(sql, values)


# Bounds of what the tables hold on both databases.
_MAX_INT = 2**31 - 1
_MIN_TIME, _MAX_TIME = -62135596800.0, 253402300799.0  # years 1 to 9999


def _kept(report: ImportReport) -> str:
    if not report.added:
        return "; nothing was imported"
    return (
        f"; the {report.added} votes before it were imported: fix the file and import it "
        "again (nothing is added twice)"
    )


def _check_row(path: Path, number: int, row: BattleRow) -> None:
    """Refuse, with the row and field named, what a table cannot hold."""

    def fail(field: str, problem: str) -> ImportFormatError:
        return ImportFormatError(f"{path}: row {number}, field {field!r}: {problem}")

    for field_name in ("model_a", "model_b"):
        name = getattr(row, field_name)
        if len(name) > 128:
            raise fail(field_name, f"a model name has at most 128 characters, not {len(name)}")
    if row.tstamp is not None and not _MIN_TIME < row.tstamp < _MAX_TIME:
        raise fail("tstamp", f"not a time in years 1 to 9999: {row.tstamp!r}")
    if row.turn > 10000:
        raise fail("turn", f"more turns than any battle has: {row.turn}")
    for side, style in (("a", row.style_a), ("b", row.style_b)):
        if style and max(style.tokens, style.headers, style.lists, style.bold) > _MAX_INT:
            raise fail("conv_metadata", f"a count of side {side} is too large")
    texts = [row.model_a, row.model_b, row.judge or "", row.language or ""]
    for conv in (row.conversation_a, row.conversation_b):
        texts += [content for _, content in conv or ()]
    for text in texts:
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise fail("text", "holds a lone UTF-16 surrogate, which is not text") from None


def _add_models(conn: Connection, names: set[str], config: ArenaConfig) -> list[str]:
    known = set(conn.scalars(sa.select(db.rated_models.c.name)).all())
    new = sorted(n for n in names if config.find(n) is None and n not in known)
    if new:
        now = datetime.now(UTC)
        conn.execute(db.rated_models.insert(), [{"name": n, "created_at": now} for n in new])
    return new


# Files at least this big are read by a process of their own while this one writes: the import
# is CPU-bound, and reading is a third of it (docs/benchmarks.md).
READER_PROCESS_BYTES = 8 << 20


def _chunks(
    path: Path, fmt: str | None, tagger: Tagger | None, dialect: str
) -> Iterator[_Prepared]:
    """Read, check and prepare the file chunk by chunk; raise ImportFormatError for a bad row."""
    chunk: list[tuple[int, BattleRow]] = []
    models: set[str] = set()
    read = self_battles = 0
    rows = read_battles(path, fmt)
    while True:
        try:
            number, row = next(rows)
        except StopIteration:
            break
        except (RecursionError, ValueError, OverflowError, UnicodeError) as err:
            # What the reader's own checks let through: nesting past Python's limit, numbers
            # past int()'s digit limit.
            raise ImportFormatError(
                f"{path}: row {read + 1}: unreadable ({type(err).__name__})"
            ) from None
        read += 1
        _check_row(path, number, row)
        if row.model_a == row.model_b:
            self_battles += 1
            continue
        models.update((row.model_a, row.model_b))
        chunk.append((number, row))
        if len(chunk) >= CHUNK:
            yield _prepare(chunk, models, tagger, dialect, read, self_battles)
            chunk, models = [], set()
    yield _prepare(chunk, models, tagger, dialect, read, self_battles)


def _reader_process(
    path: str, fmt: str | None, tagger: Tagger | None, dialect: str, out: Any
) -> None:
    """The reading process: prepared chunks, then ("done",) or an error, into `out`."""
    try:
        for chunk in _chunks(Path(path), fmt, tagger, dialect):
            out.put(("chunk", chunk))
        out.put(("done", None))
    except ImportFormatError as err:
        out.put(("error", str(err)))
    except BaseException as err:  # reported by the writer, which owns the exit status
        out.put(("crash", f"{type(err).__name__}: {err}"))


def _from_reader_process(
    path: Path, fmt: str | None, tagger: Tagger | None, dialect: str
) -> Iterator[_Prepared]:
    # fork: the child starts at once and inherits the tagger; only offered when this process
    # has no other thread (forking a threaded process can deadlock the child).
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue(maxsize=3)
    proc = ctx.Process(
        target=_reader_process, args=(str(path), fmt, tagger, dialect, out), daemon=True
    )
    proc.start()
    try:
        while True:
            try:
                kind, item = out.get(timeout=1.0)
            except queue.Empty:
                if not proc.is_alive():
                    raise ImportFormatError(f"{path}: the reading process stopped") from None
                continue
            if kind == "chunk":
                yield item
            elif kind == "done":
                return
            elif kind == "error":
                raise ImportFormatError(item)
            else:
                raise ImportFormatError(f"{path}: reading failed: {item}")
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()


def import_file(
    engine: Engine,
    config: ArenaConfig,
    path: Path,
    *,
    fmt: str | None = None,
    tagger: Tagger | None = None,
) -> ImportReport:
    """Import a battle file; each chunk commits on its own, so an interrupted import keeps
    what it wrote and a rerun adds the rest."""
    report = ImportReport()
    dialect = engine.dialect.name
    try:
        big = path.is_file() and path.stat().st_size >= READER_PROCESS_BYTES
    except OSError:
        big = False
    alone = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    chunks = (
        _from_reader_process(path, fmt, tagger, dialect)
        if big and alone
        else _chunks(path, fmt, tagger, dialect)
    )
    try:
        for chunk in chunks:
            with engine.begin() as conn:
                _write(conn, chunk, config, report)
    except ImportFormatError as err:
        raise ImportFormatError(f"{err}{_kept(report)}") from None
    return report


# -- export ----------------------------------------------------------------------------------


def encode_cursor(vote_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{vote_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = text.split(":", 1)
        if prefix != "v1" or not (value.isascii() and value.isdigit()) or int(value) > 2**31 - 1:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise ApiParameterError("cursor", "cursor is not one this API handed out") from None


def judge_hash(salt: bytes, voter_id: str | None) -> str | None:
    """Export-only voter id: a second salted hash, so an export cannot be joined to the
    database's voter ids (or to another deployment's export)."""
    if voter_id is None:
        return None
    digest = hmac.new(salt, voter_id.encode(), hashlib.sha256).hexdigest()[:16]
    return f"arena_user_{digest}"


_EXPORT = sa.select(
    db.votes.c.id.label("vote_id"),
    db.votes.c.outcome,
    db.votes.c.created_at.label("voted_at"),
    db.votes.c.voter_id,
    db.battles,
).join(db.battles, db.battles.c.id == db.votes.c.battle_id)


def _style(r: Any, side: str) -> StyleCounts | None:
    values = [getattr(r, f"{name}_{side}") for name in ("length", "headers", "lists", "bold")]
    if any(v is None for v in values):
        return None
    return StyleCounts(tokens=values[0], headers=values[1], lists=values[2], bold=values[3])


def _conversations(
    conn: Connection, battle_ids: list[str]
) -> dict[str, dict[str, list[tuple[str, str]]]]:
    out: dict[str, dict[str, list[tuple[str, str]]]] = {}
    if not battle_ids:
        return out
    m = db.messages.c
    rows = conn.execute(
        sa.select(m.battle_id, m.side, m.role, m.content)
        .where(m.battle_id.in_(battle_ids))
        .order_by(m.battle_id, m.side, m.turn, m.role.desc())  # user before assistant
    )
    for r in rows:
        out.setdefault(r.battle_id, {"a": [], "b": []})[r.side].append((r.role, r.content))
    return out


def battle_page(
    engine: Engine,
    *,
    after: int | None,
    limit: int,
    since: datetime | None,
    include_content: bool,
    salt: bytes,
) -> tuple[list[BattleRow], int | None]:
    """One page of the research export in vote order, and the cursor id for the next page
    (None on the last page)."""
    query = _EXPORT
    if after is not None:
        query = query.where(db.votes.c.id > after)
    if since is not None:
        query = query.where(db.votes.c.created_at >= since)
    query = query.order_by(db.votes.c.id).limit(limit + 1)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        convs = _conversations(conn, [r.id for r in rows]) if include_content else {}
    out = []
    for r in rows:
        voted_at = r.voted_at if r.voted_at.tzinfo else r.voted_at.replace(tzinfo=UTC)
        conv = convs.get(r.id, {})
        out.append(
            BattleRow(
                model_a=r.model_a,
                model_b=r.model_b,
                outcome=Outcome(r.outcome),
                tstamp=round(voted_at.timestamp(), 3),
                anony=bool(r.anony),
                question_id=r.id,
                language=r.language,
                turn=r.turns,
                judge=(r.flags or {}).get("judge") or judge_hash(salt, r.voter_id),
                style_a=_style(r, "a"),
                style_b=_style(r, "b"),
                conversation_a=tuple(conv["a"]) if conv.get("a") else None,
                conversation_b=tuple(conv["b"]) if conv.get("b") else None,
                categories=tuple(r.categories or ()),
                imported=r.source == "import",
            )
        )
    return out, (rows[-1].vote_id if more and rows else None)


def all_battles(
    engine: Engine, *, include_content: bool, salt: bytes, page: int = 10000
) -> Iterator[BattleRow]:
    """Every vote, page by page (keyset), for `arena export battles`."""
    after: int | None = None
    while True:
        rows, after = battle_page(
            engine, after=after, limit=page, since=None, include_content=include_content, salt=salt
        )
        yield from rows
        if after is None:
            return
