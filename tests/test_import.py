"""`arena import` and `arena export`: real files into a real database and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from arena import db
from arena.config import parse_config
from arena.interchange import read_battles
from arena.lifecycle import Outcome
from arena.ratings_job import compute
from arena.store import Store
from arena.transfer import all_battles, import_file
from tests.test_leaderboard import play, registry

ROOT = Path(__file__).resolve().parent.parent
GENAI = ROOT / "tests" / "data" / "genaiarena_clean_battle_20240220.json"


def run_cli(*args: str, url: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARENA_DATABASE_URL": url}
    if config is not None:
        env["ARENA_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "arena", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def counts(engine: sa.Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0
            for t in (db.battles, db.votes, db.rated_models)
        )


def test_real_clean_battle_file_imports_once(database_url: str) -> None:
    engine = db.make_engine(database_url)
    config = parse_config(registry())
    report = import_file(engine, config, GENAI)
    assert report.read == 2061 and report.self_battles == 1 and report.added == 2060
    assert len(report.new_models) == 13  # none of them is in the registry
    again = import_file(engine, config, GENAI)
    assert again.added == 0 and again.already_present == 2060
    assert counts(engine) == (2060, 2060, 13)
    result = compute(engine, config)
    # The file keeps 546 non-anonymous battles (one is the skipped self-battle); left out.
    removed = {s["name"]: s["removed"] for s in result.stages}
    assert removed["not_anonymous"] == 545 and result.votes_counted == 1515


def test_import_can_be_left_out_of_the_ratings(database_url: str) -> None:
    engine = db.make_engine(database_url)
    config = parse_config(registry(ratings={"include_imported": False}))
    import_file(engine, config, GENAI)
    play(Store(engine), "alpha", "beta", Outcome.A)
    result = compute(engine, config)
    removed = {s["name"]: s["removed"] for s in result.stages}
    assert removed["imported"] == 1515 and result.votes_counted == 1


def test_minimal_csv_rows_stay_distinct(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "votes.csv"
    path.write_text("model_a,model_b,winner\n" + "x,y,model_a\n" * 5 + "y,x,tie\n")
    engine = db.make_engine(sqlite_url)
    config = parse_config(registry())
    assert import_file(engine, config, path).added == 6
    assert import_file(engine, config, path).added == 0


def test_export_imports_back_unchanged(tmp_path: Path, database_url: str, sqlite_url: str) -> None:
    source = db.make_engine(database_url)
    config = parse_config(registry())
    store = Store(source)
    play(store, "alpha", "beta", Outcome.A, prompt="Write a python function", text_a="# Title\n")
    play(store, "gamma", "delta", Outcome.BOTH_BAD, text_b="**bold** and\n- a list\n")
    import_file(source, config, GENAI)
    salt = store.secret("export_salt")
    for fmt in ("json", "jsonl", "csv"):
        path = tmp_path / f"battles.{fmt}"
        with path.open("w", encoding="utf-8", newline="") as fh:
            from arena.interchange import write_battles

            written = write_battles(all_battles(source, include_content=True, salt=salt), fh, fmt)
        assert written == 2062
        target_url = f"sqlite:///{tmp_path / f'copy-{fmt}.db'}"
        db.upgrade(target_url)
        target = db.make_engine(target_url)
        assert import_file(target, config, path).added == 2062
        back = list(all_battles(target, include_content=True, salt=salt))
        original = [row for _, row in read_battles(path)]
        # The same battles, field for field, except that all of them are now imported.
        assert [r.__class__(**{**_fields(r), "imported": True}) for r in original] == back


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def test_cli_import_export_and_errors(tmp_path: Path, sqlite_url: str) -> None:
    result = run_cli("import", str(GENAI), url=sqlite_url)
    assert result.returncode == 0, result.stderr
    assert "added 2060 votes" in result.stdout and "fought itself" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n{"model_a": "x"}\n')
    failed = run_cli("import", str(bad), url=sqlite_url)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "row 2" in failed.stderr and "model_b" in failed.stderr
    assert run_cli("ratings", "compute", url=sqlite_url).returncode == 0
    board = run_cli("export", "leaderboard", "-", url=sqlite_url)
    rows = json.loads(board.stdout)["rows"]
    assert rows and all(r["model"].startswith("imagenhub_") for r in rows)
    missing = run_cli("export", "leaderboard", "-", "--category", "poetry", url=sqlite_url)
    assert missing.returncode == 2 and "known: overall" in missing.stderr


def _generate(path: Path, n: int) -> None:
    models = [f"model-{k:03d}" for k in range(50)]
    winners = ["model_a", "model_b", "tie", "tie (bothbad)"]
    with path.open("w") as fh:
        fh.write("[\n")
        for k in range(n):
            row = {
                "model_a": models[k % 50],
                "model_b": models[(k * 7 + 1) % 50 if (k * 7 + 1) % 50 != k % 50 else 0],
                "winner": winners[k % 4],
                "tstamp": 1.7e9 + k,
                "anony": True,
                "judge": f"arena_user_{k % 999}",
            }
            fh.write(("," if k else "") + json.dumps(row) + "\n")
        fh.write("]\n")


def _import_peak_mib(path: Path, url: str) -> float:
    """Import in a process of its own that reports its peak memory, or its reading
    process's if that is larger."""
    script = (
        "import resource as r, sys; from arena.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', max(r.getrusage(w).ru_maxrss for w in (r.RUSAGE_SELF, r.RUSAGE_CHILDREN)));"
        " sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "import", str(path)],
        env={**os.environ, "ARENA_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split("PEAK")[1]) / 1024


@pytest.mark.slow
def test_streaming_import_of_200k_battles(tmp_path: Path, sqlite_url: str) -> None:
    small, big = tmp_path / "small.json", tmp_path / "big.json"
    _generate(small, 20_000)
    _generate(big, 200_000)
    other = f"sqlite:///{tmp_path / 'small.db'}"
    db.upgrade(other)
    small_peak = _import_peak_mib(small, other)
    big_peak = _import_peak_mib(big, sqlite_url)
    engine = db.make_engine(sqlite_url)
    battles, votes, _ = counts(engine)
    self_battles = sum(1 for k in range(200_000) if (k * 7 + 1) % 50 == k % 50 and k % 50 == 0)
    assert battles == votes == 200_000 - self_battles
    # Streaming: ten times the rows, not ten times the memory (holding 200k rows would add
    # hundreds of MiB).
    assert big_peak < small_peak + 64, (small_peak, big_peak)
    assert "added 0 votes" in run_cli("import", str(big), url=sqlite_url).stdout  # idempotent
    assert counts(engine)[1] == votes


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[{"model_a": "x", "model_b": "y", "winner": "tie", "tstamp": 1e15}]', "'tstamp'"),
        (
            '[{"model_a": "x", "model_b": "y", "winner": "tie", "turn": 100000000000000000000}]',
            "turn",
        ),
        ('[{"model_a": "' + "m" * 129 + '", "model_b": "y", "winner": "tie"}]', "'model_a'"),
        ('[{"model_a": "x\\ud800", "model_b": "y", "winner": "tie"}]', "surrogate"),
        ("[" * 100_000, "row 1"),
    ],
)
def test_unstorable_rows_are_refused_by_name(
    tmp_path: Path, sqlite_url: str, text: str, where: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = run_cli("import", str(path), url=sqlite_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-800:]
    assert result.stderr.startswith("arena: error: ") and where in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_failed_import_says_what_it_kept(tmp_path: Path, sqlite_url: str) -> None:
    rows = [{"model_a": "x", "model_b": "y", "winner": "tie", "tstamp": k} for k in range(12000)]
    rows[11000]["winner"] = "bogus"
    path = tmp_path / "mid.json"
    path.write_text(json.dumps(rows))
    failed = run_cli("import", str(path), url=sqlite_url)
    assert failed.returncode == 2 and "row 11001" in failed.stderr
    assert "the 10000 votes before it were imported" in failed.stderr
    rows[11000]["winner"] = "tie"
    path.write_text(json.dumps(rows))
    fixed = run_cli("import", str(path), url=sqlite_url)
    assert "added 2000 votes, 10000 already present" in fixed.stdout


def test_export_never_leaves_a_half_file(tmp_path: Path, sqlite_url: str) -> None:
    keep = tmp_path / "keep.json"
    keep.write_text("precious")
    failed = run_cli("export", "leaderboard", str(keep), "--category", "nope", url=sqlite_url)
    assert failed.returncode == 2 and keep.read_text() == "precious"
    for target in (str(tmp_path), str(tmp_path / "missing" / "x.json")):
        result = run_cli("export", "battles", target, url=sqlite_url)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_reading_process_reports_a_bad_row(tmp_path: Path, sqlite_url: str) -> None:
    """A file past READER_PROCESS_BYTES is read by a process of its own; its errors still come
    back as one line, after what came before was written."""
    from arena.transfer import READER_PROCESS_BYTES

    path = tmp_path / "big.jsonl"
    pad = "x" * 150  # a long judge label, so that few rows make a big file
    rows = 60_000
    with path.open("w") as fh:
        for k in range(rows):
            winner = "bogus" if k == rows - 100 else "model_a"
            fh.write(
                json.dumps(
                    {"model_a": "p", "model_b": "q", "winner": winner, "tstamp": k, "judge": pad}
                )
                + "\n"
            )
    assert path.stat().st_size >= READER_PROCESS_BYTES
    failed = run_cli("import", str(path), url=sqlite_url)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-500:]
    assert f"line {rows - 99}" in failed.stderr or f"row {rows - 99}" in failed.stderr
    assert "votes before it were imported" in failed.stderr
    with db.make_engine(sqlite_url).connect() as conn:
        kept = conn.scalar(sa.select(sa.func.count()).select_from(db.votes))
    assert kept is not None and 0 < kept < rows - 100 + 1


def test_a_judge_named_like_a_flag_is_not_a_flag(tmp_path: Path, sqlite_url: str) -> None:
    """Imported judge labels are kept in the battle's flags; a label that spells a flag's name
    must not mark the battle (the stages read flags from the database's text)."""
    rows = [
        {"model_a": "x", "model_b": "y", "winner": "model_a", "tstamp": k, "judge": judge}
        for k, judge in enumerate(["demo", "identity_leak", "someone"])
    ]
    path = tmp_path / "judges.json"
    path.write_text(json.dumps(rows))
    engine = db.make_engine(sqlite_url)
    config = parse_config(registry())  # not in demo mode: demo battles would be left out
    import_file(engine, config, path)
    result = compute(engine, config)
    assert result.votes_counted == 3, result.stages
