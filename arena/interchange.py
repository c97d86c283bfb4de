"""Battle files in and out: the interchange format shared with other arenas.

This module is pure: it reads and writes files, never the database. `arena import FILE` feeds
`read_battles` into the store; `arena export battles` feeds the store into `write_battles`.

The format is the "clean battle" JSON that LMSYS Chatbot Arena (FastChat's
`clean_battle_data.py`) publishes, and that forks such as GenAI-Arena reuse: one object per
battle with `model_a`, `model_b`, `winner` (`model_a`, `model_b`, `tie` or `tie (bothbad)`),
`tstamp` (unix seconds), `anony`, and optionally `judge`, `language`, `turn`, `question_id`,
`conversation_a`/`conversation_b` (lists of `{"role", "content"}`) and `conv_metadata`
(FastChat's style-control counts). Other keys (`dedup_tag`, `category_tag`, `is_code`, ...)
are ignored. The same fields are read from JSON lines and from CSV with a header row.

Arena adds two fields of its own, `categories` (a list of tags) and `imported` (true for a row
that Arena itself imported from elsewhere); other tools ignore them, as Arena ignores theirs.

Public files run to gigabytes, so every reader streams: memory stays bounded by the largest
single row (at most `MAX_ROW_CHARS`), whatever the size of the file.

Normalization on read (so that a row survives any write/read round trip unchanged):
- NUL characters are removed from every string (PostgreSQL text cannot hold them);
- model names lose surrounding whitespace, and must not be empty;
- an empty `question_id`, `language` or `judge` is the same as a missing one (`None`);
- a missing `anony` means anonymous (`True`), a missing `turn` means 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from arena.errors import ImportFormatError
from arena.lifecycle import Outcome

__all__ = [
    "FORMATS",
    "MAX_ROW_CHARS",
    "WINNERS",
    "BattleRow",
    "StyleCounts",
    "parse_battles",
    "read_battles",
    "row_key",
    "write_battles",
]

WINNERS: dict[str, Outcome] = {
    "model_a": Outcome.A,
    "model_b": Outcome.B,
    "tie": Outcome.TIE,
    "tie (bothbad)": Outcome.BOTH_BAD,
}
_WINNER_OF: dict[Outcome, str] = {outcome: text for text, outcome in WINNERS.items()}

FORMATS = ("json", "jsonl", "csv")

#: Read size for a JSON array, in characters.
CHUNK_CHARS = 1 << 20
#: The largest single row (object, line or CSV record) a reader accepts, in characters. It bounds
#: memory on a malformed file (an unterminated string or quote would otherwise swallow the rest).
MAX_ROW_CHARS = 64 << 20

# Column order of the CSV export and key order of the JSON export (FastChat's order first).
_FIELDS = (
    "question_id",
    "model_a",
    "model_b",
    "winner",
    "judge",
    "turn",
    "anony",
    "language",
    "tstamp",
    "conversation_a",
    "conversation_b",
    "conv_metadata",
    "categories",
    "imported",
)
_REQUIRED = ("model_a", "model_b", "winner")


@dataclass(frozen=True, slots=True)
class StyleCounts:
    """One side's answers, as style control needs them (FastChat's `conv_metadata`, one side).

    `tokens` is `sum_assistant_<side>_tokens`; `headers`, `lists` and `bold` are the totals of
    `header_count_<side>` (h1..h6), `list_count_<side>` (ordered, unordered) and
    `bold_count_<side>` ("**", "__").
    """

    tokens: int
    headers: int
    lists: int
    bold: int


@dataclass(frozen=True, slots=True)
class BattleRow:
    model_a: str
    model_b: str
    outcome: Outcome
    tstamp: float | None = None
    anony: bool = True
    question_id: str | None = None
    language: str | None = None
    turn: int = 1
    judge: str | None = None
    style_a: StyleCounts | None = None  # from conv_metadata when present
    style_b: StyleCounts | None = None
    conversation_a: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs
    conversation_b: tuple[tuple[str, str], ...] | None = None
    categories: tuple[str, ...] = ()  # Arena's own category tags
    imported: bool = False  # set by Arena's export on rows that Arena had imported

    @property
    def prompt(self) -> str | None:
        """The first user turn of `conversation_a`, if there is one."""
        for role, content in self.conversation_a or ():
            if role == "user":
                return content
        return None


# --------------------------------------------------------------------------------------------
# Reading


class _FieldError(Exception):
    """A bad value in one row; the reader adds the file and the row."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def read_battles(path: Path, fmt: str | None = None) -> Iterator[tuple[int, BattleRow]]:
    """Yield `(row number, row)` for every battle in the file at `path`, streaming.

    The format is `fmt` ("json", "jsonl" or "csv") or, when `fmt` is None, detected from the
    first non-whitespace character: `[` is a JSON array of objects, `{` is JSON lines (one object
    per line), anything else is CSV with a header row. The file is UTF-8 (a BOM is allowed).

    The row number is 1-based: for a JSON array it is the object's position in the array (error
    messages add the line it starts on); for JSON lines and CSV it is the line the row starts on
    (the CSV header is line 1, so the first battle is row 2; blank lines are skipped but counted).

    Every row that can be read is yielded, including rows the caller will probably not count:
    - a row with `model_a == model_b` (a self-battle; the GenAI-Arena file has one) is yielded
      as is, never an error: the caller skips it and reports how many it skipped;
    - a row with `anony` false (the names were visible when the vote was cast) is yielded with
      `anony=False`: whether to store or rate it is the caller's decision.

    Raises `ImportFormatError`, whose message names the file, the row and the field, for: a
    missing or empty `model_a`/`model_b`/`winner`, a model name that is not a string, an unknown
    winner string, a `tstamp` that is not a finite number, a bad `anony`/`turn`/`imported`/
    `conversation_*`/`conv_metadata`/`categories` value, malformed JSON, a JSON value that is not
    an array of objects, an empty file and a file that is none of the formats (including a CSV
    header without the three required columns). Rows before the bad one have been yielded by
    then. The file is opened on the first `next()`, so a missing file raises there too.
    """
    name = str(path)
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below)
    except OSError as err:
        raise ImportFormatError(f"{name}: cannot open: {err.strerror or err}") from None
    with fh:
        yield from parse_battles(fh, name, fmt)


def parse_battles(
    fh: TextIO, name: str = "<stream>", fmt: str | None = None, *, chunk_chars: int = CHUNK_CHARS
) -> Iterator[tuple[int, BattleRow]]:
    """`read_battles` on an open text stream (best opened with `newline=""`); `name` is used in
    error messages. `chunk_chars` is the read size for a JSON array."""
    if fmt is not None and fmt not in FORMATS:
        raise ImportFormatError(
            f"{name}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    try:
        head, lead_lines = _head(fh, name)
        if fmt is None:
            fmt = "json" if head[0] == "[" else "jsonl" if head[0] == "{" else "csv"
        if fmt == "json":
            yield from _read_json_array(fh, head, lead_lines, name, chunk_chars)
            return
        lines = _lines(fh, head, lead_lines, name)
        if fmt == "jsonl":
            yield from _read_jsonl(lines, lead_lines, name)
        else:
            yield from _read_csv(lines, lead_lines, name)
    except UnicodeDecodeError as err:
        raise ImportFormatError(
            f"{name}: not UTF-8 text ({err.reason} at byte {err.start} of a read block); "
            "a compressed file must be decompressed first"
        ) from None


def _head(fh: TextIO, name: str) -> tuple[str, int]:
    """Skip leading whitespace; return the text read from the first other character on, and
    the number of line breaks skipped."""
    lead_lines = 0
    while True:
        text = fh.read(4096)
        if not text:
            raise ImportFormatError(f"{name}: the file is empty")
        rest = text.lstrip(" \t\r\n\ufeff")
        lead_lines += text.count("\n", 0, len(text) - len(rest))
        if rest:
            return rest, lead_lines


def _lines(fh: TextIO, head: str, lead_lines: int, name: str) -> Iterator[str]:
    """The lines of the file from `head` on, none longer than `MAX_ROW_CHARS`."""
    limit = MAX_ROW_CHARS + 1
    number = lead_lines
    for line in itertools.chain(
        io.StringIO(head + fh.readline(limit), newline=""), iter(partial(fh.readline, limit), "")
    ):
        number += 1
        if len(line) >= limit:
            raise ImportFormatError(f"{name}: line {number} is over {MAX_ROW_CHARS} characters")
        yield line


def _error(name: str, row: int, where: str, err: _FieldError) -> ImportFormatError:
    field = f", field {err.field!r}" if err.field else ""
    return ImportFormatError(f"{name}: row {row}{where}{field}: {err.message}")


_WS = re.compile(r"[ \t\n\r]*")


def _read_json_array(
    fh: TextIO, buf: str, lead_lines: int, name: str, chunk: int
) -> Iterator[tuple[int, BattleRow]]:
    """Decode one object at a time from a sliding buffer: the memory held is one chunk plus
    the object being decoded, never the file."""
    raw_decode = json.JSONDecoder().raw_decode
    skip_ws: Callable[[str, int], re.Match[str]] = _WS.match  # type: ignore[assignment]
    dropped_lines = lead_lines  # line breaks in text already dropped from `buf`
    eof = False
    row = 0

    def line_at(pos: int) -> int:
        return dropped_lines + buf.count("\n", 0, pos) + 1

    if buf[0] != "[":
        raise ImportFormatError(
            f"{name}: not a JSON array (line {line_at(0)} starts with {buf[0]!r}); "
            "a JSON battle file is an array of objects"
        )
    pos = 1
    expect_value = True  # after `[` or `,`
    while True:
        pos = skip_ws(buf, pos).end()
        if pos >= len(buf):  # the buffer is used up: slide it
            if eof:
                what = "a battle object" if expect_value else "',' or ']'"
                raise ImportFormatError(
                    f"{name}: malformed JSON: the file ends after row {row} "
                    f"(line {line_at(pos)}) where {what} was expected"
                )
            dropped_lines += buf.count("\n")
            buf, pos = fh.read(chunk), 0
            eof = not buf
            continue
        char = buf[pos]
        if not expect_value:
            if char == ",":
                expect_value = True
                pos += 1
                continue
            if char == "]":
                break
            raise ImportFormatError(
                f"{name}: malformed JSON after row {row} (line {line_at(pos)}): "
                f"expected ',' or ']', found {char!r}"
            )
        if char == "]" and row == 0:  # an empty array
            break
        try:
            obj, end = raw_decode(buf, pos)
        except json.JSONDecodeError as err:
            near_end = err.pos >= len(buf) - 16 or err.msg.startswith("Unterminated string")
            if eof or not near_end:
                raise ImportFormatError(
                    f"{name}: row {row + 1} (line {line_at(err.pos)}): malformed JSON: {err.msg}"
                ) from None
            # Most likely the object continues in the next chunk: read on. Reading at least as
            # much again as we hold keeps re-decoding a long object linear overall.
            held = len(buf) - pos
            if held > MAX_ROW_CHARS:
                raise ImportFormatError(
                    f"{name}: row {row + 1} (line {line_at(pos)}): malformed JSON or a row over "
                    f"{MAX_ROW_CHARS} characters"
                ) from None
            more = fh.read(max(chunk, held))
            dropped_lines += buf.count("\n", 0, pos)
            buf, pos = buf[pos:] + more, 0
            eof = not more
            continue
        row += 1
        if type(obj) is not dict:
            raise ImportFormatError(
                f"{name}: row {row} (line {line_at(pos)}): not a JSON object but "
                f"{_json_type(obj)}; a JSON battle file is an array of objects"
            )
        try:
            battle = _to_row(obj)
        except _FieldError as err:
            raise _error(name, row, f" (line {line_at(pos)})", err) from None
        pos = end
        expect_value = False
        yield row, battle
    # After the closing bracket only whitespace may follow.
    pos += 1
    while True:
        pos = skip_ws(buf, pos).end()
        if pos < len(buf):
            raise ImportFormatError(
                f"{name}: malformed JSON: text after the closing ']' (line {line_at(pos)})"
            )
        dropped_lines += buf.count("\n")
        buf, pos = fh.read(chunk), 0
        if not buf:
            return


def _read_jsonl(
    lines: Iterable[str], lead_lines: int, name: str
) -> Iterator[tuple[int, BattleRow]]:
    loads = json.JSONDecoder().decode
    for number, line in enumerate(lines, lead_lines + 1):
        if line.isspace() or not line:
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as err:
            hint = ""
            if number == lead_lines + 1:
                hint = " (a JSON battle file is an array of objects, or one object per line)"
            raise ImportFormatError(
                f"{name}: row {number}: malformed JSON: {err.msg}, column {err.colno}{hint}"
            ) from None
        if type(obj) is not dict:
            raise ImportFormatError(
                f"{name}: row {number}: not a JSON object but {_json_type(obj)}"
            )
        try:
            battle = _to_row(obj)
        except _FieldError as err:
            raise _error(name, number, "", err) from None
        yield number, battle


def _read_csv(lines: Iterable[str], lead_lines: int, name: str) -> Iterator[tuple[int, BattleRow]]:
    if csv.field_size_limit() < MAX_ROW_CHARS:
        csv.field_size_limit(MAX_ROW_CHARS)  # a conversation cell easily exceeds the 128 KiB
    reader = csv.reader(lines, strict=True)
    last_line = 0
    try:
        header = next((record for record in reader if record), None)
        if header is None:
            raise ImportFormatError(f"{name}: the file is empty")
        header_line, last_line = reader.line_num + lead_lines, reader.line_num
        columns = [column.strip().lstrip("\ufeff") for column in header]
        missing = [column for column in _REQUIRED if column not in columns]
        if missing:
            raise ImportFormatError(
                f"{name}: not a battle file: not a JSON array, not JSON lines, and the CSV header "
                f"(line {header_line}) lacks the column(s) {', '.join(missing)}"
            )
        width = len(columns)
        for record in reader:
            number, last_line = last_line + 1 + lead_lines, reader.line_num
            if not record:
                continue
            if len(record) != width:
                raise ImportFormatError(
                    f"{name}: row {number}: {len(record)} cells where the header has {width} "
                    "columns (a cell holding a comma must be quoted)"
                )
            try:
                battle = _to_row(
                    {key: value for key, value in zip(columns, record, strict=True) if value}
                )
            except _FieldError as err:
                raise _error(name, number, "", err) from None
            yield number, battle
    except csv.Error as err:
        raise ImportFormatError(
            f"{name}: row {last_line + 1 + lead_lines}: malformed CSV: {err}"
        ) from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _to_row(obj: dict[str, Any]) -> BattleRow:
    """One battle from a decoded JSON object or a CSV record (all values strings, empty cells
    left out). Types are checked by value, so both sources share this path."""
    get = obj.get
    model_a = _model(get("model_a"), "model_a")
    model_b = _model(get("model_b"), "model_b")
    winner = get("winner")
    outcome = WINNERS.get(winner) if type(winner) is str else None
    if outcome is None:
        outcome = _outcome(winner)
    tstamp = get("tstamp")
    if tstamp is not None:
        if type(tstamp) is not float:
            tstamp = _number(tstamp)
        if not -1e300 < tstamp < 1e300:  # also false for NaN
            raise _FieldError("tstamp", f"not a finite number: {tstamp!r}")
    anony = get("anony", True)
    if anony is not True and anony is not False:
        anony = _bool(anony, "anony", default=True)
    turn = get("turn", 1)
    if type(turn) is not int or turn < 1:
        turn = _turn(turn)
    question_id = get("question_id")
    if question_id is not None:
        question_id = _opt_str(question_id, "question_id", numbers=True)
    language = get("language")
    if language is not None:
        language = _opt_str(language, "language")
    judge = get("judge")
    if judge is not None:
        judge = _opt_str(judge, "judge", numbers=True)
    style_a = style_b = None
    meta = get("conv_metadata")
    if meta is not None:
        style_a, style_b = _styles(meta)
    conversation_a = get("conversation_a")
    if conversation_a is not None:
        conversation_a = _conversation(conversation_a, "conversation_a")
    conversation_b = get("conversation_b")
    if conversation_b is not None:
        conversation_b = _conversation(conversation_b, "conversation_b")
    categories = get("categories")
    categories = () if categories is None else _categories(categories)
    imported = get("imported", False)
    if imported is not True and imported is not False:
        imported = _bool(imported, "imported", default=False)
    return BattleRow(
        model_a,
        model_b,
        outcome,
        tstamp,
        anony,
        question_id,
        language,
        turn,
        judge,
        style_a,
        style_b,
        conversation_a,
        conversation_b,
        categories,
        imported,
    )


def _clean(text: str) -> str:
    return text.replace("\x00", "") if "\x00" in text else text


def _model(value: object, field: str) -> str:
    if value is None:
        raise _FieldError(field, "missing")
    if type(value) is not str:
        raise _FieldError(field, f"a model name must be a string, not {_json_type(value)}")
    name = _clean(value).strip()
    if not name:
        raise _FieldError(field, "empty model name")
    return name


def _outcome(winner: object) -> Outcome:
    if winner is None:
        raise _FieldError("winner", "missing")
    if isinstance(winner, str):
        outcome = WINNERS.get(" ".join(winner.split()).lower())
        if outcome is not None:
            return outcome
    expected = ", ".join(repr(text) for text in WINNERS)
    raise _FieldError("winner", f"unknown winner {winner!r}; expected one of {expected}")


def _number(value: object) -> float:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _FieldError("tstamp", f"not a number: {value!r}")


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _bool(value: object, field: str, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if not text:
            return default
    elif type(value) is int and value in (0, 1):
        return bool(value)
    raise _FieldError(field, f"not a boolean (true/false/1/0): {value!r}")


def _turn(value: object) -> int:
    if value is None:
        return 1
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or number != int(number) or number < 1:
        raise _FieldError("turn", f"not a whole number of at least 1: {value!r}")
    return int(number)


def _opt_str(value: object, field: str, *, numbers: bool = False) -> str | None:
    if isinstance(value, str):
        text = _clean(value)
        return text or None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _FieldError(field, f"must be a string, not {_json_type(value)}")


def _json_cell(value: object, field: str) -> object:
    """A CSV cell (or a JSON string) holding JSON text: decode it."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise _FieldError(field, f"malformed JSON text: {err}") from None
    return value


def _conversation(value: object, field: str) -> tuple[tuple[str, str], ...]:
    value = _json_cell(value, field)
    if not isinstance(value, list):
        raise _FieldError(field, f"must be a list of messages, not {_json_type(value)}")
    turns = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise _FieldError(field, f"message {index} is {_json_type(message)}, not an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise _FieldError(field, f"message {index} has no string 'role'")
        turns.append((_clean(role), _content(message.get("content"), field, index)))
    return tuple(turns)


def _content(value: object, field: str, index: int) -> str:
    if isinstance(value, str):
        return _clean(value)
    if value is None:
        return ""
    if isinstance(value, list):
        # Multimodal arenas store [text, [image ids]] or OpenAI-style parts: keep the text.
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return _clean("\n".join(parts))
    raise _FieldError(field, f"message {index} has a 'content' that is {_json_type(value)}")


_SIDE_KEYS = {
    side: (
        f"sum_assistant_{side}_tokens",
        f"header_count_{side}",
        f"list_count_{side}",
        f"bold_count_{side}",
    )
    for side in ("a", "b")
}


def _styles(value: object) -> tuple[StyleCounts | None, StyleCounts | None]:
    meta = _json_cell(value, "conv_metadata")
    if not isinstance(meta, dict):
        raise _FieldError("conv_metadata", f"must be an object, not {_json_type(meta)}")
    return _style(meta, "a"), _style(meta, "b")


def _style(meta: dict[str, Any], side: str) -> StyleCounts | None:
    """One side's counts; None unless all four of its keys are there."""
    keys = _SIDE_KEYS[side]
    if any(key not in meta for key in keys):
        return None
    k0, k1, k2, k3 = keys
    return StyleCounts(
        _count(meta[k0], k0), _count(meta[k1], k1), _count(meta[k2], k2), _count(meta[k3], k3)
    )


def _count(value: object, key: str) -> int:
    """FastChat stores either a number or a dict of numbers (h1..h6, ordered/unordered, **/__);
    its style control takes the number, or the sum of the dict (and so do we)."""
    if type(value) is int and value >= 0:  # the common cases first: a million rows pass here
        return value
    if type(value) is dict:
        parts = value.values()
        try:  # sum and min run in C; a float or a negative part takes the general path
            total = sum(parts)
            if type(total) is int and (not parts or min(parts) >= 0):
                return total
        except TypeError:
            pass
        return sum(_count(part, key) for part in parts)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < 0:
        raise _FieldError(f"conv_metadata.{key}", f"not a count: {value!r}")
    return value


def _categories(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            value = _json_cell(value, "categories")
        else:  # a plain cell: comma-separated tags
            return tuple(tag for tag in (_clean(t).strip() for t in value.split(",")) if tag)
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise _FieldError("categories", "must be a list of strings")
    return tuple(_clean(tag) for tag in value)


# --------------------------------------------------------------------------------------------
# Identity


def row_key(row: BattleRow) -> str:
    """A stable content hash (32 hex characters) of the fields that identify a battle:
    question_id, model_a, model_b, outcome, tstamp, turn and judge. Importing the same file twice
    gives the same keys, so the second import can skip what the first stored.

    Rows that carry none of question_id, tstamp and judge (a bare model_a/model_b/winner CSV) are
    told apart by nothing but their models and outcome: two such rows get the same key although
    they may be two real votes. A caller that imports such files must not rely on this key alone
    (e.g. add the row's occurrence count within the file).

    The key is versioned by its first field, so the encoding never changes silently.
    """
    ident = json.dumps(
        [
            "arena-battle-v1",
            row.question_id,
            row.model_a,
            row.model_b,
            row.outcome.value,
            row.tstamp,
            row.turn,
            row.judge,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.blake2b(ident.encode("utf-8"), digest_size=16).hexdigest()


# --------------------------------------------------------------------------------------------
# Writing

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def write_battles(rows: Iterable[BattleRow], fh: TextIO, fmt: str) -> int:
    """Write `rows` to `fh` as "json" (a JSON array, one object per line, written as it goes:
    the list is never built), "jsonl" or "csv" (open `fh` with `newline=""`); return the count.

    The field names and values are the input ones: the winner strings of `WINNERS`, `tstamp` in
    unix seconds, `conv_metadata` with FastChat's keys, plus Arena's `categories` and `imported`.
    Every row gets every scalar field (null or an empty CSV cell when missing); the
    conversations and `conv_metadata` only when the row has them. Style counts are written as
    totals (`"header_count_a": 3`), not split by level: Arena keeps only the totals, and
    FastChat's style control reads a number there as it reads the sum of a dict. In CSV the
    conversations, `conv_metadata` and `categories` are JSON text in their cells.

    `read_battles` gives back equal rows in every format, up to the normalization it does on
    read (NUL removed, model names stripped, empty optional strings read as None).
    """
    if fmt == "csv":
        return _write_csv(rows, fh)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    write = fh.write
    count = 0
    if fmt == "jsonl":
        for row in rows:
            write(_ENCODE(_to_obj(row)))
            write("\n")
            count += 1
        return count
    separator = "[\n"
    for row in rows:
        write(separator)
        write(_ENCODE(_to_obj(row)))
        separator = ",\n"
        count += 1
    write("\n]\n" if count else "[]\n")
    return count


def _conversation_obj(turns: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def _meta_obj(row: BattleRow) -> dict[str, int] | None:
    meta: dict[str, int] = {}
    for side, style in (("a", row.style_a), ("b", row.style_b)):
        if style is not None:
            keys = _SIDE_KEYS[side]
            meta[keys[0]] = style.tokens
            meta[keys[1]] = style.headers
            meta[keys[2]] = style.lists
            meta[keys[3]] = style.bold
    return meta or None


def _to_obj(row: BattleRow) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "question_id": row.question_id,
        "model_a": row.model_a,
        "model_b": row.model_b,
        "winner": _WINNER_OF[row.outcome],
        "judge": row.judge,
        "turn": row.turn,
        "anony": row.anony,
        "language": row.language,
        "tstamp": row.tstamp,
    }
    if row.conversation_a is not None:
        obj["conversation_a"] = _conversation_obj(row.conversation_a)
    if row.conversation_b is not None:
        obj["conversation_b"] = _conversation_obj(row.conversation_b)
    meta = _meta_obj(row)
    if meta is not None:
        obj["conv_metadata"] = meta
    obj["categories"] = list(row.categories)
    obj["imported"] = row.imported
    return obj


def _write_csv(rows: Iterable[BattleRow], fh: TextIO) -> int:
    writer = csv.writer(fh)
    writer.writerow(_FIELDS)
    count = 0
    for row in rows:
        meta = _meta_obj(row)
        writer.writerow(
            (
                row.question_id or "",
                row.model_a,
                row.model_b,
                _WINNER_OF[row.outcome],
                row.judge or "",
                row.turn,
                "true" if row.anony else "false",
                row.language or "",
                "" if row.tstamp is None else repr(row.tstamp),
                ""
                if row.conversation_a is None
                else _ENCODE(_conversation_obj(row.conversation_a)),
                ""
                if row.conversation_b is None
                else _ENCODE(_conversation_obj(row.conversation_b)),
                "" if meta is None else _ENCODE(meta),
                _ENCODE(list(row.categories)) if row.categories else "",
                "true" if row.imported else "false",
            )
        )
        count += 1
    return count
