"""`python -m ratings FILE`: formats, options and error messages."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ratings import WINNER_CODES, rate_battles
from ratings.cli import STYLE_COLUMNS, main
from ratings.simulate import simulate_battles, simulate_style_battles

from .conftest import PAIR_COUNTS

NAMES = ["alpha", "beta", "gamma", "delta", "epsilon"]
WINNERS = {code: name for name, code in WINNER_CODES.items()}


def battle_rows(
    seed: int = 0, m: int = 3000
) -> tuple[list[dict[str, str]], tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    a, b, o = simulate_battles(rng.normal(0, 0.7, 5), m, rng, 0.3)
    rows = [
        {"model_a": NAMES[x], "model_b": NAMES[y], "winner": WINNERS[z]}
        for x, y, z in zip(a.tolist(), b.tolist(), o.tolist(), strict=True)
    ]
    return rows, (a, b, o)


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_and_jsonl_give_the_same_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, (a, b, o) = battle_rows()
    code, out_csv, _ = run(capsys, str(write_csv(tmp_path / "b.csv", rows)))  # type: ignore[arg-type]
    assert code == 0
    code, out_jsonl, _ = run(capsys, str(write_jsonl(tmp_path / "b.jsonl", rows)))  # type: ignore[arg-type]
    assert code == 0
    assert out_csv == out_jsonl
    table = json.loads(out_csv)
    assert [set(r) for r in table] == [
        {"model", "rating", "lower", "upper", "rank_ub", "battles"}
    ] * 5
    ratings = [r["rating"] for r in table]
    assert ratings == sorted(ratings, reverse=True)
    # The numbers are those of the library on the same battles.
    board = rate_battles(a, b, o)
    for r in table:
        k = NAMES.index(r["model"])
        assert r["rating"] == pytest.approx(board.rating[k], abs=1e-4)
        assert r["upper"] == pytest.approx(board.upper[k], abs=1e-4)
        assert r["battles"] == board.battles[k]


def test_anchor_bootstrap_seed_and_csv_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, _ = battle_rows(1)
    path = str(write_csv(tmp_path / "b.csv", rows))  # type: ignore[arg-type]
    args = [path, "--anchor", "gamma=1114", "--ci", "bootstrap", "--rounds", "200", "--seed", "7"]
    code, out, _ = run(capsys, *args, "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["model", "rating", "lower", "upper", "rank_ub", "battles"]
    gamma = next(r for r in table if r["model"] == "gamma")
    assert float(gamma["rating"]) == 1114.0 == float(gamma["lower"])
    assert run(capsys, *args, "--format", "csv")[1] == out  # same seed, same intervals
    assert run(capsys, *args[:-1], "8", "--format", "csv")[1] != out


def test_pair_count_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(PAIR_COUNTS), "--anchor", "mixtral-8x7b-instruct-v0.1=1114")
    assert code == 0
    table = json.loads(out)
    assert len(table) == 129
    assert table[0]["model"] == "chatgpt-4o-latest"
    mixtral = next(r for r in table if r["model"] == "mixtral-8x7b-instruct-v0.1")
    assert mixtral["rating"] == 1114.0
    assert sum(r["battles"] for r in table) == 2 * 1_670_250


def test_style_from_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    a, b, o, sa, sb = simulate_style_battles(
        rng.normal(size=5), np.array([0.8, 0.3, 0.2, 0.1]), 3000, rng
    )
    rows: list[dict[str, object]] = []
    for k in range(a.size):
        row: dict[str, object] = {
            "model_a": NAMES[a[k]],
            "model_b": NAMES[b[k]],
            "winner": WINNERS[int(o[k])],
        }
        for e, (col_a, col_b) in enumerate(STYLE_COLUMNS):
            row[col_a], row[col_b] = int(sa[k, e]), int(sb[k, e])
        rows.append(row)
    path = str(write_csv(tmp_path / "s.csv", rows))
    code, out, _ = run(capsys, path, "--style")
    assert code == 0
    board = rate_battles(a, b, o, style_a=sa, style_b=sb)
    for r in json.loads(out):
        assert r["rating"] == pytest.approx(board.rating[NAMES.index(r["model"])], abs=1e-4)
    # Without --style the same file gives the plain fit, which differs.
    assert run(capsys, path)[1] != out


def expect_error(capsys: pytest.CaptureFixture[str], args: list[str], *fragments: str) -> None:
    code, out, err = run(capsys, *args)
    assert code != 0
    assert out == ""
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows, _ = battle_rows(3, m=50)
    good = str(write_csv(tmp_path / "good.csv", rows))  # type: ignore[arg-type]

    (tmp_path / "cols.csv").write_text("a,b,who\nx,y,model_a\n")
    expect_error(
        capsys, [str(tmp_path / "cols.csv")], "unknown columns", "model_a, model_b, winner"
    )

    (tmp_path / "win.csv").write_text("model_a,model_b,winner\nx,y,model_a\nx,y,draw\n")
    expect_error(capsys, [str(tmp_path / "win.csv")], "line 3", "unknown winner 'draw'")

    (tmp_path / "win.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "a"}\n')
    expect_error(capsys, [str(tmp_path / "win.jsonl")], "line 1", "unknown winner 'a'")

    (tmp_path / "keys.jsonl").write_text('{"model_a": "x", "model_b": "y"}\n')
    expect_error(capsys, [str(tmp_path / "keys.jsonl")], "line 1", "missing: winner")

    expect_error(capsys, [good, "--anchor", "nobody=1000"], "'nobody' is not in the data")
    expect_error(capsys, [good, "--anchor", "alpha"], "MODEL=RATING")
    expect_error(capsys, [good, "--style"], "len_a", "missing")
    expect_error(capsys, [str(PAIR_COUNTS), "--style"], "--style needs battles")

    for name, text in [
        ("empty.csv", ""),
        ("header.csv", "model_a,model_b,winner\n"),
        ("e.jsonl", ""),
    ]:
        (tmp_path / name).write_text(text)
        expect_error(
            capsys, [str(tmp_path / name)], "empty" if name == "empty.csv" else "no battles"
        )
    (tmp_path / "empty.json").write_text("")
    expect_error(capsys, [str(tmp_path / "empty.json")], "empty")

    expect_error(capsys, [str(tmp_path / "missing.csv")], "no such file")
    (tmp_path / "b.txt").write_text("x")
    expect_error(capsys, [str(tmp_path / "b.txt")], "unknown file type")

    (tmp_path / "self.csv").write_text("model_a,model_b,winner\nx,x,tie\n")
    expect_error(capsys, [str(tmp_path / "self.csv")], "line 2", "itself")


def test_module_entry_point(tmp_path: Path) -> None:
    rows, _ = battle_rows(4, m=200)
    path = write_csv(tmp_path / "b.csv", rows)  # type: ignore[arg-type]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "ratings", str(path), "--format", "csv"],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "model,rating,lower,upper,rank_ub,battles"
    bad = subprocess.run(
        [sys.executable, "-m", "ratings", str(path), "--anchor", "zeta=1"],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    assert bad.returncode != 0 and "zeta" in bad.stderr
