"""Battle files: FastChat clean-battle JSON, JSON lines and CSV, read by streaming and written
back so that a round trip gives the same rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from arena import interchange
from arena.errors import ImportFormatError
from arena.interchange import (
    CHUNK_CHARS,
    WINNERS,
    BattleRow,
    StyleCounts,
    parse_battles,
    read_battles,
    row_key,
    write_battles,
)
from arena.lifecycle import Outcome

GENAI_ARENA = Path("/work/shared/data/genaiarena_clean_battle_20240220.json")


def write(tmp_path: Path, text: str, name: str = "battles.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def rows_of(path: Path, fmt: str | None = None) -> list[BattleRow]:
    return [row for _, row in read_battles(path, fmt)]


def fails(path: Path, *fragments: str, fmt: str | None = None) -> str:
    """Reading `path` raises ImportFormatError naming the file and every fragment."""
    with pytest.raises(ImportFormatError) as info:
        list(read_battles(path, fmt))
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------------
# The formats


def test_winner_strings_map_to_outcomes() -> None:
    assert WINNERS == {
        "model_a": Outcome.A,
        "model_b": Outcome.B,
        "tie": Outcome.TIE,
        "tie (bothbad)": Outcome.BOTH_BAD,
    }


@pytest.mark.skipif(not GENAI_ARENA.exists(), reason=f"{GENAI_ARENA} is not there")
def test_real_genai_arena_file() -> None:
    numbered = list(read_battles(GENAI_ARENA))
    assert [number for number, _ in numbered] == list(range(1, 2062))
    rows = [row for _, row in numbered]
    assert Counter(row.outcome for row in rows) == {
        Outcome.A: 759,
        Outcome.B: 744,
        Outcome.BOTH_BAD: 428,
        Outcome.TIE: 130,
    }
    assert sum(not row.anony for row in rows) == 546  # yielded: the caller decides
    assert rows[0] == BattleRow(
        model_a="imagenhub_SDXLTurbo_generation",
        model_b="imagenhub_LCM_generation",
        outcome=Outcome.A,
        tstamp=1707700514.3167,
        anony=True,
        judge="arena_user_::1",
    )
    # The one self-battle is yielded, not raised: the caller skips and counts it.
    selves = [(number, row) for number, row in numbered if row.model_a == row.model_b]
    assert len(selves) == 1
    number, row = selves[0]
    assert number == 1820
    assert row.model_a == "imagenhub_SDXLTurbo_generation"
    assert row.outcome is Outcome.BOTH_BAD
    assert row.anony is False
    assert all(row.turn == 1 and row.conversation_a is None for row in rows)


FASTCHAT_ROW = {
    "question_id": "6a8c0b7e1f2d4c3b",
    "model_a": " gpt-4o-2024-05-13 ",
    "model_b": "claude-3-5-sonnet-20240620",
    "winner": "tie (bothbad)",
    "judge": "arena_user_1234",
    "turn": 2,
    "anony": True,
    "language": "English",
    "tstamp": 1723479651.547,
    "conv_metadata": {
        "sum_user_tokens": 40,
        "sum_assistant_a_tokens": 512,
        "sum_assistant_b_tokens": 300,
        "context_a_tokens": 600,
        "context_b_tokens": 380,
        "turns": 2,
        "header_count_a": {"h1": 1, "h2": 2, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "list_count_a": {"ordered": 3, "unordered": 4},
        "bold_count_a": {"**": 5, "__": 1},
        "header_count_b": {"h1": 0, "h2": 0, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "list_count_b": {"ordered": 0, "unordered": 2},
        "bold_count_b": {"**": 0, "__": 0},
    },
    "conversation_a": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "# Hello\n**there**"},
        {"role": "user", "content": "More"},
        {"role": "assistant", "content": "1. a\n2. b"},
    ],
    "conversation_b": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "hey"},
        {"role": "user", "content": "More"},
        {"role": "assistant", "content": "- x"},
    ],
    "dedup_tag": {"high_freq": False, "sampled": True},
    "category_tag": {"criteria_v0.1": {"math": False}},
    "is_code": False,
}

FASTCHAT_EXPECTED = BattleRow(
    model_a="gpt-4o-2024-05-13",
    model_b="claude-3-5-sonnet-20240620",
    outcome=Outcome.BOTH_BAD,
    tstamp=1723479651.547,
    anony=True,
    question_id="6a8c0b7e1f2d4c3b",
    language="English",
    turn=2,
    judge="arena_user_1234",
    style_a=StyleCounts(tokens=512, headers=3, lists=7, bold=6),
    style_b=StyleCounts(tokens=300, headers=0, lists=2, bold=0),
    conversation_a=(
        ("user", "Hi"),
        ("assistant", "# Hello\n**there**"),
        ("user", "More"),
        ("assistant", "1. a\n2. b"),
    ),
    conversation_b=(("user", "Hi"), ("assistant", "hey"), ("user", "More"), ("assistant", "- x")),
)


def test_fastchat_json_array_with_every_field(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps([FASTCHAT_ROW, FASTCHAT_ROW], indent=2))
    rows = rows_of(path)
    assert rows == [FASTCHAT_EXPECTED, FASTCHAT_EXPECTED]
    assert rows[0].prompt == "Hi"
    assert BattleRow("a", "b", Outcome.A).prompt is None


def test_style_counts_as_plain_numbers_and_partial_metadata(tmp_path: Path) -> None:
    meta = {
        "sum_assistant_a_tokens": 10,
        "header_count_a": 1,
        "list_count_a": 2,
        "bold_count_a": 3.0,
        "sum_assistant_b_tokens": 7,  # b is incomplete: no style for b
    }
    row = {"model_a": "a", "model_b": "b", "winner": "model_a", "conv_metadata": meta}
    [got] = rows_of(write(tmp_path, json.dumps([row])))
    assert got.style_a == StyleCounts(10, 1, 2, 3)
    assert got.style_b is None


def test_json_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"model_a": "a", "model_b": "b", "winner": "model_a", "tstamp": 5}),
        "",
        "   ",
        json.dumps({"model_a": "b", "model_b": "c", "winner": "tie", "anony": False}),
    ]
    path = write(tmp_path, "\n\n" + "\r\n".join(lines) + "\n")
    assert list(read_battles(path)) == [
        (3, BattleRow("a", "b", Outcome.A, tstamp=5.0)),
        (6, BattleRow("b", "c", Outcome.TIE, anony=False)),
    ]


def test_csv(tmp_path: Path) -> None:
    conversation = json.dumps([{"role": "user", "content": 'say "hi", twice\nplease'}])
    text = (
        "\ufeffmodel_a,model_b,winner,tstamp,anony,turn,language,judge,conversation_a,extra\r\n"
        "a,b,model_b,1700000000.5,true,1,,j1,,x\r\n"
        "\r\n"
        f'a,c,tie,,0,3,German,"two\nlines","{conversation.replace(chr(34), chr(34) * 2)}",y\r\n'
        "c,b,tie (bothbad),12,FALSE,,,,,\r\n"
        "b,a,model_a,,1,,,,,\r\n"
    )
    path = write(tmp_path, text)
    assert list(read_battles(path)) == [
        (2, BattleRow("a", "b", Outcome.B, tstamp=1700000000.5, judge="j1")),
        (
            4,
            BattleRow(
                "a",
                "c",
                Outcome.TIE,
                anony=False,
                turn=3,
                language="German",
                judge="two\nlines",
                conversation_a=(("user", 'say "hi", twice\nplease'),),
            ),
        ),
        (6, BattleRow("c", "b", Outcome.BOTH_BAD, tstamp=12.0, anony=False)),  # row 4 spans 2 lines
        (7, BattleRow("b", "a", Outcome.A, anony=True)),
    ]


def test_minimal_csv_and_forced_format(tmp_path: Path) -> None:
    path = write(tmp_path, "model_a,model_b,winner\na,b,model_a\n")
    assert rows_of(path) == rows_of(path, "csv") == [BattleRow("a", "b", Outcome.A)]
    # A JSON-lines file read as CSV has no such header: the error says so.
    jsonl = write(tmp_path, '{"model_a": "a", "model_b": "b", "winner": "tie"}\n', "x.jsonl")
    assert rows_of(jsonl, "jsonl") == [BattleRow("a", "b", Outcome.TIE)]
    fails(jsonl, "not a battle file", "model_a", fmt="csv")
    fails(jsonl, "not a JSON array", fmt="json")


def test_cleaning_nul_whitespace_and_lenient_values(tmp_path: Path) -> None:
    row = {
        "model_a": "\x00 mod\x00el-a\t",
        "model_b": "model-b",
        "winner": " Tie  (BothBad) ",
        "tstamp": "1700000000.25",
        "anony": 1,
        "turn": 2.0,
        "question_id": 17,
        "language": "",
        "judge": "ju\x00dge",
        "conversation_a": [
            {"role": "user", "content": "a\x00b"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": ["look at this", ["img-hash"]]},
            {"role": "user", "content": [{"type": "text", "text": "parts"}, {"type": "image"}]},
        ],
        "categories": ["code", "ma\x00th"],
        "imported": "yes",
    }
    [got] = rows_of(write(tmp_path, json.dumps([row])))
    assert got == BattleRow(
        model_a="model-a",
        model_b="model-b",
        outcome=Outcome.BOTH_BAD,
        tstamp=1700000000.25,
        anony=True,
        question_id="17",
        language=None,
        turn=2,
        judge="judge",
        conversation_a=(
            ("user", "ab"),
            ("assistant", ""),
            ("user", "look at this"),
            ("user", "parts"),
        ),
        categories=("code", "math"),
        imported=True,
    )


def test_self_battles_and_named_votes_are_yielded(tmp_path: Path) -> None:
    rows = [
        {"model_a": "x", "model_b": " x ", "winner": "model_a", "anony": False},
        {"model_a": "x", "model_b": "y", "winner": "model_b", "anony": False},
    ]
    got = rows_of(write(tmp_path, json.dumps(rows)))
    assert got == [
        BattleRow("x", "x", Outcome.A, anony=False),
        BattleRow("x", "y", Outcome.B, anony=False),
    ]


def test_csv_categories_as_plain_tags(tmp_path: Path) -> None:
    path = write(tmp_path, 'model_a,model_b,winner,categories\na,b,tie,"code, math ,"\n')
    assert rows_of(path)[0].categories == ("code", "math")


def test_empty_array_and_whitespace_everywhere(tmp_path: Path) -> None:
    assert rows_of(write(tmp_path, " \n[ \n\t]\n\n")) == []
    text = '\n [ {"model_a":"a","model_b":"b","winner":"tie"} \r\n ,\n\t{"model_a":"b",'
    text += '"model_b":"a","winner":"model_b"}\n]  \n'
    assert rows_of(write(tmp_path, text)) == [
        BattleRow("a", "b", Outcome.TIE),
        BattleRow("b", "a", Outcome.B),
    ]


# --------------------------------------------------------------------------------------------
# Errors: every one names the file, the row and (where there is one) the field


def jrow(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {"model_a": "a", "model_b": "b", "winner": "model_a"}
    row.update(fields)
    return {key: value for key, value in row.items() if value is not ...}


BAD_ROWS = [
    (jrow(model_a=...), "'model_a'", "missing"),
    (jrow(model_b=...), "'model_b'", "missing"),
    (jrow(winner=...), "'winner'", "missing"),
    (jrow(model_a=None), "'model_a'", "missing"),
    (jrow(winner="left"), "'winner'", "unknown winner 'left'"),
    (jrow(winner="a"), "'winner'", "unknown winner"),
    (jrow(winner=1), "'winner'", "unknown winner"),
    (jrow(tstamp="yesterday"), "'tstamp'", "not a number"),
    (jrow(tstamp=True), "'tstamp'", "not a number"),
    (jrow(tstamp=[1]), "'tstamp'", "not a number"),
    (jrow(tstamp=float("nan")), "'tstamp'", "not a finite number"),
    (jrow(tstamp="inf"), "'tstamp'", "not a finite number"),
    (jrow(model_a=5), "'model_a'", "must be a string, not a number"),
    (jrow(model_b=["b"]), "'model_b'", "must be a string, not an array"),
    (jrow(model_a="  "), "'model_a'", "empty model name"),
    (jrow(model_b=""), "'model_b'", "empty model name"),
    (jrow(anony="maybe"), "'anony'", "not a boolean"),
    (jrow(anony=2), "'anony'", "not a boolean"),
    (jrow(imported=[]), "'imported'", "not a boolean"),
    (jrow(turn=0), "'turn'", "at least 1"),
    (jrow(turn=1.5), "'turn'", "whole number"),
    (jrow(turn="two"), "'turn'", "whole number"),
    (jrow(language=3), "'language'", "must be a string"),
    (jrow(judge={"id": 1}), "'judge'", "must be a string"),
    (jrow(conversation_a={"role": "user"}), "'conversation_a'", "list of messages"),
    (jrow(conversation_b=[{"content": "x"}]), "'conversation_b'", "message 0 has no string 'role'"),
    (jrow(conversation_a=["hi"]), "'conversation_a'", "message 0 is a string"),
    (jrow(conversation_a=[{"role": "user", "content": 3}]), "'conversation_a'", "'content'"),
    (jrow(conv_metadata=[]), "'conv_metadata'", "must be an object"),
    (
        jrow(
            conv_metadata={
                "sum_assistant_a_tokens": -1,
                "header_count_a": 0,
                "list_count_a": 0,
                "bold_count_a": 0,
            }
        ),
        "'conv_metadata.sum_assistant_a_tokens'",
        "not a count",
    ),
    (
        jrow(
            conv_metadata={
                "sum_assistant_b_tokens": 1,
                "header_count_b": {"h1": "x"},
                "list_count_b": 0,
                "bold_count_b": 0,
            }
        ),
        "'conv_metadata.header_count_b'",
        "not a count",
    ),
    (jrow(categories=[1]), "'categories'", "list of strings"),
]


@pytest.mark.parametrize(("bad", "field", "message"), BAD_ROWS)
def test_bad_row_in_a_json_array(tmp_path: Path, bad: dict, field: str, message: str) -> None:
    good = jrow()
    text = "[\n" + json.dumps(good) + ",\n" + json.dumps(good) + ",\n" + json.dumps(bad) + "\n]"
    fails(write(tmp_path, text), f"row 3 (line 4), field {field}: ", message)


@pytest.mark.parametrize(("bad", "field", "message"), BAD_ROWS)
def test_bad_row_in_json_lines(tmp_path: Path, bad: dict, field: str, message: str) -> None:
    text = json.dumps(jrow()) + "\n\n" + json.dumps(bad) + "\n" + json.dumps(jrow()) + "\n"
    fails(write(tmp_path, text), f"row 3, field {field}: ", message)


def test_rows_before_a_bad_one_are_yielded(tmp_path: Path) -> None:
    text = json.dumps([jrow(), jrow(winner="left"), jrow()])
    rows = read_battles(write(tmp_path, text))
    assert next(rows) == (1, BattleRow("a", "b", Outcome.A))
    with pytest.raises(ImportFormatError, match="row 2"):
        next(rows)


CSV_HEADER = "model_a,model_b,winner,tstamp,anony,turn,conversation_a,conv_metadata\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (",b,model_a,,,,,", "field 'model_a': missing"),
        ("a,,model_a,,,,,", "field 'model_b': missing"),
        ("a,b,,,,,,", "field 'winner': missing"),
        ("a,b,A wins,,,,,", "field 'winner': unknown winner 'A wins'"),
        ("a,b,model_a,noon,,,,", "field 'tstamp': not a number: 'noon'"),
        ("  ,b,model_a,,,,,", "field 'model_a': empty model name"),
        ("a,b,tie,,yes please,,,", "field 'anony': not a boolean"),
        ("a,b,tie,,,x,,", "field 'turn'"),
        ("a,b,tie,,,,not json,", "field 'conversation_a': malformed JSON text"),
        ("a,b,tie,,,,,{bad", "field 'conv_metadata': malformed JSON text"),
        ("a,b,tie,,,,,[]", "field 'conv_metadata': must be an object"),
        ("a,b,tie", "3 cells where the header has 8 columns"),
        ("a,b,tie,1,true,1,,,surplus", "9 cells where the header has 8 columns"),
    ],
)
def test_bad_row_in_csv(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, CSV_HEADER + "a,b,tie,,,,,\n\n" + line + "\n")
    fails(path, f"row 4{', ' if expected.startswith('field') else ': '}{expected}")


def test_bad_csv_quoting(tmp_path: Path) -> None:
    fails(write(tmp_path, CSV_HEADER + 'a,b,tie,,,,"[]"x,\n'), "row 2: malformed CSV")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ("the file is empty",)),
        (" \n\t\n", ("the file is empty",)),
        ("[1, 2]", ("row 1 (line 1): not a JSON object but a number", "array of objects")),
        ('[{"model_a": "a", "model_b": "b", "winner": "tie"}, "x"]', ("row 2", "a string")),
        (
            "[[]]",
            (
                "row 1",
                "not a JSON object but an array",
            ),
        ),
        ('[\n{"model_a": "a",\n "model_b": }\n]', ("row 1 (line 3): malformed JSON",)),
        ('[{"model_a": "a", "model_b": "b", "winner": "tie"}\n{}]', ("after row 1 (line 2)",)),
        ('[{"model_a": "a", "model_b": "b", "winner": "tie"},]', ("row 2", "malformed JSON")),
        ('[{"model_a": "a", "model_b": "b", "winner": "tie"}', ("ends after row 1",)),
        ('[{"model_a": "a", "model_b": "b"', ("row 1", "malformed JSON")),
        ("[]\n[]", ("text after the closing ']' (line 2)",)),
        ('{"model_a": "a", "model_b": "b", "winner": "tie"}\n{"model_a": ', ("row 2: malformed",)),
        ('{\n  "battles": []\n}\n', ("row 1: malformed JSON", "array of objects")),
        ('{"battles": []}\n', ("row 1, field 'model_a': missing",)),
        ("[1]\n", ()),
        ('"just a string"', ("not a battle file", "model_a, model_b, winner")),
        ("42", ("not a battle file",)),
        ("name,score\nx,1\n", ("not a battle file", "CSV header (line 1)", "model_a")),
        ("model_a,winner\nx,tie\n", ("lacks the column(s) model_b",)),
    ],
)
def test_files_that_are_not_battle_files(tmp_path: Path, text: str, fragments: tuple) -> None:
    fails(write(tmp_path, text), *fragments)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    text = json.dumps(jrow()) + "\n[1]\n"
    fails(write(tmp_path, text), "row 2: not a JSON object but an array")


def test_missing_file_unknown_format_and_compressed_file(tmp_path: Path) -> None:
    fails(tmp_path / "nope.json", "cannot open")
    path = write(tmp_path, json.dumps([jrow()]))
    fails(path, "unknown format 'xml'", fmt="xml")
    gz = tmp_path / "battles.json.gz"
    gz.write_bytes(gzip.compress(json.dumps([jrow()] * 50).encode()))
    fails(gz, "not UTF-8", "decompress")


# --------------------------------------------------------------------------------------------
# Round trips

AWKWARD = "commas, \"quotes\", 'single'\nnewline\r\ncrlf\rcr\ttab ]}[{ \\ é 中文 🤖 \u2028"

ROUND_TRIP_ROWS = [
    FASTCHAT_EXPECTED,
    BattleRow("a", "b", Outcome.A),
    BattleRow("modèle-α", "模型", Outcome.B, tstamp=0.1 + 0.2, anony=False, turn=7),
    BattleRow(
        model_a='model, "quoted"',
        model_b="model\nwith newline",
        outcome=Outcome.TIE,
        tstamp=1e-7,
        question_id="q,1",
        language="Français",
        judge='judge "j"',
        style_a=StyleCounts(0, 0, 0, 0),
        conversation_a=(("user", AWKWARD), ("assistant", "")),
        conversation_b=(),
        categories=("coding", "hard, prompts", AWKWARD),
        imported=True,
    ),
    BattleRow(
        "x", "x", Outcome.BOTH_BAD, tstamp=1723479651.547123, style_b=StyleCounts(1, 2, 3, 4)
    ),
    BattleRow("y", "z", Outcome.TIE, tstamp=-5.0, conversation_b=(("system", "be brief"),)),
]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as fh:
        assert write_battles(iter(ROUND_TRIP_ROWS), fh, fmt) == len(ROUND_TRIP_ROWS)
    assert rows_of(path) == ROUND_TRIP_ROWS  # format detected
    assert rows_of(path, fmt) == ROUND_TRIP_ROWS


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_round_trip_of_nothing(tmp_path: Path, fmt: str) -> None:
    buffer = io.StringIO(newline="")
    assert write_battles([], buffer, fmt) == 0
    if fmt == "jsonl":
        assert buffer.getvalue() == ""
        return
    path = write(tmp_path, buffer.getvalue())
    assert rows_of(path) == []


def test_round_trip_of_the_real_file(tmp_path: Path) -> None:
    if not GENAI_ARENA.exists():
        pytest.skip(f"{GENAI_ARENA} is not there")
    rows = rows_of(GENAI_ARENA)
    for fmt in ("json", "jsonl", "csv"):
        path = tmp_path / f"copy.{fmt}"
        with path.open("w", encoding="utf-8", newline="") as fh:
            write_battles(rows, fh, fmt)
        assert rows_of(path) == rows
        assert [row_key(row) for row in rows_of(path)] == [row_key(row) for row in rows]


def test_json_export_is_fastchat_clean_battle_json() -> None:
    buffer = io.StringIO()
    write_battles([FASTCHAT_EXPECTED, BattleRow("a", "b", Outcome.A)], buffer, "json")
    data = json.loads(buffer.getvalue())
    assert [row["winner"] for row in data] == ["tie (bothbad)", "model_a"]
    first = data[0]
    assert first["conversation_a"][0] == {"role": "user", "content": "Hi"}
    # FastChat's style control takes a number as it is and sums a dict: totals are written.
    assert first["conv_metadata"] == {
        "sum_assistant_a_tokens": 512,
        "header_count_a": 3,
        "list_count_a": 7,
        "bold_count_a": 6,
        "sum_assistant_b_tokens": 300,
        "header_count_b": 0,
        "list_count_b": 2,
        "bold_count_b": 0,
    }
    assert first["categories"] == [] and first["imported"] is False
    assert data[1] == {
        "question_id": None,
        "model_a": "a",
        "model_b": "b",
        "winner": "model_a",
        "judge": None,
        "turn": 1,
        "anony": True,
        "language": None,
        "tstamp": None,
        "categories": [],
        "imported": False,
    }


def test_csv_export_header_and_cells() -> None:
    buffer = io.StringIO(newline="")
    write_battles([FASTCHAT_EXPECTED], buffer, "csv")
    header, record = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    cells = dict(zip(header, record, strict=True))
    assert header[:4] == ["question_id", "model_a", "model_b", "winner"]
    assert cells["winner"] == "tie (bothbad)" and cells["anony"] == "true"
    assert json.loads(cells["conversation_b"])[1] == {"role": "assistant", "content": "hey"}
    assert json.loads(cells["conv_metadata"])["list_count_a"] == 7
    assert cells["categories"] == "" and cells["imported"] == "false"


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_writing_streams(fmt: str) -> None:
    """Each row is written before the next one is asked for: no list of all rows is built."""
    buffer = io.StringIO(newline="")
    seen: list[int] = []

    def rows() -> Iterator[BattleRow]:
        for index in range(3):
            seen.append(len(buffer.getvalue()))
            yield BattleRow(f"m{index}", "n", Outcome.A)

    assert write_battles(rows(), buffer, fmt) == 3
    assert seen[0] < seen[1] < seen[2]


def test_writing_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        write_battles([], io.StringIO(), "xml")


# --------------------------------------------------------------------------------------------
# Identity


def test_row_key_is_stable() -> None:
    row = BattleRow("a", "b", Outcome.A, tstamp=1707700514.3167, judge="arena_user_::1")
    key = row_key(row)
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    # Pinned: changing the encoding would make every earlier import look new.
    assert key == "c32cbbcf83f98d43a16ff252da43ab15"


def test_row_key_ignores_what_does_not_identify_a_battle() -> None:
    row = FASTCHAT_EXPECTED
    same = BattleRow(
        model_a=row.model_a,
        model_b=row.model_b,
        outcome=row.outcome,
        tstamp=row.tstamp,
        question_id=row.question_id,
        turn=row.turn,
        judge=row.judge,
        anony=False,
        language="German",
        categories=("x",),
        imported=True,
    )
    assert row_key(same) == row_key(row)


@pytest.mark.parametrize(
    "change",
    [
        {"question_id": "other"},
        {"question_id": None},
        {"model_a": "gpt-4o"},
        {"model_b": "claude"},
        {"outcome": Outcome.TIE},
        {"tstamp": 1723479651.548},
        {"tstamp": None},
        {"turn": 3},
        {"judge": "someone else"},
        {"judge": None},
        # the models swapped is another battle (and another outcome)
        {"model_a": "claude-3-5-sonnet-20240620", "model_b": "gpt-4o-2024-05-13"},
    ],
)
def test_row_key_changes_with_each_identifying_field(change: dict) -> None:
    fields = {
        "model_a": FASTCHAT_EXPECTED.model_a,
        "model_b": FASTCHAT_EXPECTED.model_b,
        "outcome": FASTCHAT_EXPECTED.outcome,
        "tstamp": FASTCHAT_EXPECTED.tstamp,
        "question_id": FASTCHAT_EXPECTED.question_id,
        "turn": FASTCHAT_EXPECTED.turn,
        "judge": FASTCHAT_EXPECTED.judge,
    }
    assert row_key(BattleRow(**{**fields, **change})) != row_key(BattleRow(**fields))


def test_row_key_is_the_same_whatever_the_format(tmp_path: Path) -> None:
    as_int = write(tmp_path, json.dumps([jrow(tstamp=1700000000, question_id=7)]), "a.json")
    as_csv = write(tmp_path, "question_id,model_a,model_b,winner,tstamp\n7,a,b,model_a,1.7e9\n")
    assert row_key(rows_of(as_int)[0]) == row_key(rows_of(as_csv)[0])


# --------------------------------------------------------------------------------------------
# Streaming


class CountingReader:
    """A text stream that counts the characters handed out, whichever way they are read."""

    def __init__(self, fh: io.TextIOBase) -> None:
        self.fh = fh
        self.chars = 0

    def read(self, size: int = -1) -> str:
        text = self.fh.read(size)
        self.chars += len(text)
        return text

    def readline(self, size: int = -1) -> str:
        line = self.fh.readline(size)
        self.chars += len(line)
        return line

    def __iter__(self) -> CountingReader:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


MODELS = ["gpt-4o", "claude-3-opus", "llama-3-70b", "mistral-large", "qwen2-72b", "gemma-2-27b"]
WINNER_TEXT = list(WINNERS)
BIG = 200_000


def big_row(index: int) -> dict[str, object]:
    return {
        "model_a": MODELS[index % 6],
        "model_b": MODELS[(index + 1 + index // 6 % 5) % 6],
        "winner": WINNER_TEXT[index % 4],
        "judge": f"arena_user_{index % 997}",
        "anony": index % 3 != 0,
        "tstamp": 1700000000 + index * 0.25,
    }


def as_json(row: dict[str, object]) -> dict[str, object]:
    return {**row, "anony": "true" if row["anony"] else "false"}


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FastChat-style array of 200,000 battles, indented as FastChat writes it (~34 MB)."""
    path = tmp_path_factory.mktemp("big") / "clean_battle.json"
    template = (
        '{\n  "model_a": "%(model_a)s",\n  "model_b": "%(model_b)s",\n  "winner": "%(winner)s",\n'
        '  "judge": "%(judge)s",\n  "anony": %(anony)s,\n  "tstamp": %(tstamp)r\n}'
    )
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[\n")
        fh.write(",\n".join(template % as_json(big_row(index)) for index in range(BIG)))
        fh.write("\n]\n")
    assert json.loads(template % as_json(big_row(3))) == big_row(3)
    return path


def test_big_file_parses_in_bounded_memory(big_file: Path) -> None:
    assert big_file.stat().st_size > 25 * 2**20
    picks = {0: None, 1: None, 12_345: None, BIG - 1: None}
    count = 0
    tracemalloc.start()
    try:
        for number, row in read_battles(big_file):
            count += 1
            if number - 1 in picks:
                picks[number - 1] = row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == BIG
    for index, row in picks.items():
        source = big_row(index)
        assert row == BattleRow(
            model_a=source["model_a"],
            model_b=source["model_b"],
            outcome=WINNERS[source["winner"]],
            tstamp=source["tstamp"],
            anony=source["anony"],
            judge=source["judge"],
        )
    # One chunk of text plus its copy while sliding: a few MiB, whatever the file size.
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_first_row_after_reading_a_small_prefix(big_file: Path) -> None:
    with big_file.open(encoding="utf-8", newline="") as raw:
        fh = CountingReader(raw)
        rows = parse_battles(fh, "big")  # type: ignore[arg-type]
        number, row = next(rows)
        assert (number, row.model_a, row.tstamp) == (1, "gpt-4o", 1700000000.0)
        assert fh.chars <= CHUNK_CHARS + 4096
        assert fh.chars < big_file.stat().st_size / 25
        for _ in range(10_000):
            next(rows)
        assert fh.chars <= 2 * CHUNK_CHARS + 4096


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_line_formats_stream(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"big.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as fh:
        write_battles(
            (BattleRow("a", "b", Outcome.A, tstamp=float(i)) for i in range(20_000)), fh, fmt
        )
    with path.open(encoding="utf-8", newline="") as raw:
        fh = CountingReader(raw)
        rows = parse_battles(fh, "big")  # type: ignore[arg-type]
        assert next(rows)[1].tstamp == 0.0
        assert fh.chars < 4096 + 1000  # one detection block and the rest of its line
        assert sum(1 for _ in rows) == 19_999


def test_objects_split_at_every_chunk_boundary() -> None:
    """Tiny chunks split every object, string, escape and number somewhere; the rows are the
    same as with one chunk for the whole text."""
    rows = [
        jrow(
            tstamp=1707700514.3167,
            judge='a "quoted" \\ ] } , judge',
            conversation_a=[{"role": "user", "content": "é中🤖\n" * 3}],
            categories=["[x]", "{y}"],
            conv_metadata={
                "sum_assistant_a_tokens": 12345,
                "header_count_a": {"h1": 1},
                "list_count_a": {"ordered": 2},
                "bold_count_a": {"**": 3},
            },
        ),
        jrow(model_a="b", model_b="c", winner="tie (bothbad)", tstamp=-1.5e-3, anony=False),
    ]
    for indent in (None, 4):
        text = json.dumps(rows * 3, indent=indent, ensure_ascii=indent is None)
        expected = list(parse_battles(io.StringIO(text), chunk_chars=len(text) + 1))
        assert len(expected) == 6
        for chunk in (1, 2, 3, 5, 7, 16, 61):
            assert list(parse_battles(io.StringIO(text), chunk_chars=chunk)) == expected


class OneByteAtATime(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.pos >= len(self.data) or not len(buffer):
            return 0
        buffer[0] = self.data[self.pos]
        self.pos += 1
        return 1


def test_utf8_split_across_reads() -> None:
    row = jrow(model_a="модель-é", model_b="模型🤖", judge="ü" * 50)
    data = json.dumps([row, row], ensure_ascii=False).encode("utf-8")
    fh = io.TextIOWrapper(io.BufferedReader(OneByteAtATime(data), buffer_size=1), "utf-8")
    got = [row for _, row in parse_battles(fh, chunk_chars=3)]
    assert got == [BattleRow("модель-é", "模型🤖", Outcome.A, judge="ü" * 50)] * 2


def test_a_row_longer_than_a_chunk(tmp_path: Path) -> None:
    long = "word " * 300_000  # 1.5 M characters: longer than one chunk
    text = json.dumps([jrow(), jrow(conversation_a=[{"role": "user", "content": long}]), jrow()])
    got = rows_of(write(tmp_path, text))
    assert len(got) == 3 and got[1].prompt == long
    small = list(parse_battles(io.StringIO(text), chunk_chars=1000))
    assert [row for _, row in small] == got


def test_rows_over_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interchange, "MAX_ROW_CHARS", 1000)
    unterminated = '[{"model_a": "a", "model_b": "' + "x" * 5000
    with pytest.raises(ImportFormatError, match=r"row 1 .*over 1000 characters"):
        list(parse_battles(io.StringIO(unterminated), "big", chunk_chars=100))
    lines = json.dumps(jrow()) + "\n" + json.dumps(jrow(judge="x" * 5000)) + "\n"
    fails(write(tmp_path, lines), "line 2 is over 1000 characters")
