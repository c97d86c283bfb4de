"""End-to-end check of the leaderboard pipeline on real votes: `python -m bench.chatbot_arena`.

The 1,670,250 Chatbot Arena votes of tests/data/chatbotarena_20240814_pair_counts.json (grouped
per unordered model pair) are expanded into a FastChat clean-battle JSON array, one object per
battle. The pairs are unordered, so each battle's two models are put on the left and right at
random (seeded) and the winner flipped with them: sides taken from the pair's order would make
the position term stand for "the model with the lower index", not for the left side.

Then, in a temporary directory, against a fresh SQLite database and a registry of two dummy
models that are not in the data: `arena db upgrade`, `arena import FILE`, `arena ratings compute`
and `arena export leaderboard - --format json` (plain and `--style-control`), each as its own
process, timed, with its peak resident memory (VmHWM of that process).

The overall board is compared with LMSYS's published 2024-08-13 leaderboard
(tests/data/published_bt_20240813.csv, anchored at mixtral-8x7b-instruct-v0.1 = 1114) after
shifting Arena's ratings (centred on 1000) to the same anchor; name mapping as in
tests/data/SOURCES.md. As a check of the pipeline itself, the same battles are also fitted in this
process by `ratings.rate_arena` with the default options, which the board should equal.

`--sample N` rates a uniform random subsample of N battles instead of all of them. Wall-clock
figures depend on the machine and on what else runs on it; the load average is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import spearmanr

from ratings import RatingOptions, rate_arena

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
COUNTS = DATA / "chatbotarena_20240814_pair_counts.json"
PUBLISHED = DATA / "published_bt_20240813.csv"
ANCHOR, ANCHOR_RATING = "mixtral-8x7b-instruct-v0.1", 1114.0
# Pair-count name -> published name (tests/data/SOURCES.md); gpt-4o-2024-08-06 is not published.
PUBLISHED_NAME = {"chatgpt-4o-latest": "chatgpt-4o-latest-2024-08-08"}
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")  # outcome codes 0..3
TSTAMP0 = 1.7e9
DUMMIES = ("bench-dummy-left", "bench-dummy-right")

# `arena` in a process of its own, then that process's peak RSS (VmHWM) on stderr. getrusage()
# of the parent would not do: a child started by vfork inherits the parent's high-water mark.
_WRAPPER = """
import sys
from arena.cli import main
try:
    code = main(sys.argv[1:])
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    print("VmHWM-KiB", hwm, file=sys.stderr, flush=True)
sys.exit(code)
"""


@dataclass
class Step:
    name: str
    seconds: float
    peak_mib: float
    stdout: str
    stderr: str


@dataclass
class Battles:
    models: list[str]
    a: NDArray[np.int64]  # left model, index into `models`
    b: NDArray[np.int64]
    outcome: NDArray[np.int64]  # 0 left wins, 1 right wins, 2 tie, 3 both bad


def expand(path: Path, sample: int | None, seed: int) -> Battles:
    """One battle per vote of the pair counts, sides at random; a uniform subsample if asked."""
    data = json.loads(path.read_text(encoding="utf-8"))
    models = list(data["models"])
    pairs = np.asarray(data["X"], dtype=np.int64)
    counts = np.asarray(data["Y"], dtype=np.int64)
    cell = np.repeat(np.arange(counts.size), counts.ravel())  # pair * 4 + outcome, per battle
    pair, outcome = np.divmod(cell, 4)
    rng = np.random.default_rng(seed)
    total = int(cell.size)
    if sample is not None and sample < total:
        order = rng.choice(total, size=sample, replace=False)  # in random order
    else:
        order = rng.permutation(total)  # file order mixes pairs, as a real log does
    i, j, o = pairs[pair[order], 0], pairs[pair[order], 1], outcome[order]
    flip = rng.random(order.size) < 0.5
    a = np.where(flip, j, i)
    b = np.where(flip, i, j)
    o = np.where(flip & (o < 2), 1 - o, o)  # a win for i is a win for the right side
    return Battles(models, a, b, o)


def write_clean_battles(battles: Battles, path: Path) -> None:
    """FastChat clean-battle JSON array; a distinct tstamp per row keeps identical rows apart."""
    names = [json.dumps(m) for m in battles.models]
    winners = [json.dumps(w) for w in WINNERS]
    with path.open("w", encoding="utf-8") as out:
        out.write("[\n")
        step = 100_000
        n = battles.a.size
        for start in range(0, n, step):
            stop = min(start + step, n)
            rows = [
                f'{{"model_a": {names[x]}, "model_b": {names[y]}, "winner": {winners[w]}, '
                f'"anony": true, "tstamp": {TSTAMP0 + k:.1f}}}'
                for k, x, y, w in zip(
                    range(start, stop),
                    battles.a[start:stop].tolist(),
                    battles.b[start:stop].tolist(),
                    battles.outcome[start:stop].tolist(),
                    strict=True,
                )
            ]
            out.write(",\n".join(rows))
            out.write(",\n" if stop < n else "\n")
        out.write("]\n")


def write_registry(path: Path) -> None:
    models = "".join(
        f'[[models]]\nname = "{name}"\n'
        f'endpoints = [{{ base_url = "http://127.0.0.1:9/v1", model = "{name}" }}]\n\n'
        for name in DUMMIES
    )
    path.write_text(
        '[arena]\ntitle = "Chatbot Arena replay (bench)"\n\n'
        "[ratings]\ninterval_minutes = 0\n\n"
        "[ratings.options]\n\n" + models,
        encoding="utf-8",
    )


def run_arena(name: str, args: list[str], env: dict[str, str]) -> Step:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    hwm = [line for line in proc.stderr.splitlines() if line.startswith("VmHWM-KiB")]
    if proc.returncode != 0:
        raise SystemExit(
            f"`arena {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    peak = float(hwm[-1].split()[1]) / 1024.0 if hwm else float("nan")
    return Step(name, seconds, peak, proc.stdout, proc.stderr)


def read_published(path: Path) -> dict[str, float]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["model"]: float(row["rating"]) for row in csv.DictReader(fh)}


def compare(rows: list[dict[str, Any]], published: dict[str, float]) -> dict[str, Any]:
    """Arena's board shifted to the published anchor, against the published ratings."""
    ours = {PUBLISHED_NAME.get(r["model"], r["model"]): float(r["rating"]) for r in rows}
    if ANCHOR not in ours:
        return {"common": 0}
    shift = ANCHOR_RATING - ours[ANCHOR]
    common = sorted(set(ours) & set(published))
    x = np.array([ours[m] + shift for m in common])
    y = np.array([published[m] for m in common])
    diff = x - y
    worst = int(np.argmax(np.abs(diff)))
    rho = float(spearmanr(x, y).statistic)
    return {
        "common": len(common),
        "only_ours": sorted(set(ours) - set(published)),
        "only_published": sorted(set(published) - set(ours)),
        "shift": shift,
        "mae": float(np.mean(np.abs(diff))),
        "max": float(np.abs(diff[worst])),
        "worst": common[worst],
        "worst_diff": float(diff[worst]),
        "spearman": rho,
    }


def direct_fit(battles: Battles) -> tuple[dict[str, float], float | None]:
    """The same battles through `ratings.rate_arena`, default options, no database."""
    options = RatingOptions()
    board = rate_arena(
        battles.a,
        battles.b,
        battles.outcome,
        len(battles.models),
        options=options,
        rng=np.random.default_rng(options.seed),
    )
    ratings = {
        m: float(board.rating[k])
        for k, m in enumerate(battles.models)
        if np.isfinite(board.rating[k])
    }
    coef = None if board.position_coef is None else float(board.position_coef)
    return ratings, coef


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chatbot_arena")
    parser.add_argument("--sample", type=int, help="a uniform random subsample of N battles")
    parser.add_argument("--seed", type=int, default=0, help="sides and sample (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error("--sample must be at least 1")

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    battles = expand(COUNTS, args.sample, args.seed)
    n = int(battles.a.size)
    left_share = float(np.mean(battles.a < battles.b))
    tmp = Path(tempfile.mkdtemp(prefix="arena-bench-"))
    try:
        battles_file = tmp / "clean_battle.json"
        write_clean_battles(battles, battles_file)
        registry = tmp / "arena.toml"
        write_registry(registry)
        prepare_s = time.perf_counter() - t0
        print(
            f"{n} battles ({'sample' if args.sample else 'all'}, seed {args.seed}), "
            f"{battles_file.stat().st_size / 2**20:.0f} MiB file, {prepare_s:.1f} s; in {tmp}",
            flush=True,
        )

        env = {
            **os.environ,
            "ARENA_DATABASE_URL": f"sqlite:///{tmp / 'arena.db'}",
            "ARENA_CONFIG": str(registry),
        }
        steps: list[Step] = []
        for name, cmd in (
            ("arena db upgrade", ["db", "upgrade"]),
            ("arena import", ["import", str(battles_file)]),
            ("arena ratings compute", ["ratings", "compute"]),
            ("arena export leaderboard", ["export", "leaderboard", "-", "--format", "json"]),
            (
                "arena export leaderboard --style-control",
                ["export", "leaderboard", "-", "--format", "json", "--style-control"],
            ),
        ):
            step = run_arena(name, cmd, env)
            steps.append(step)
            line = step.stdout.strip().splitlines()[-1:] if "export" not in cmd else []
            print(
                f"  {name}: {step.seconds:.1f} s, peak {step.peak_mib:.0f} MiB"
                + (f"  [{line[0][:160]}]" if line else ""),
                flush=True,
            )
        db_mib = (tmp / "arena.db").stat().st_size / 2**20
        plain = json.loads(steps[3].stdout)
        styled = json.loads(steps[4].stdout)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)

    meta, rows = plain["snapshot"], plain["rows"]
    cmp = compare(rows, read_published(PUBLISHED))
    direct, direct_coef = direct_fit(battles)
    pipe = {r["model"]: float(r["rating"]) for r in rows}
    shared = sorted(set(pipe) & set(direct))
    direct_max = max((abs(pipe[m] - direct[m]) for m in shared), default=float("nan"))
    per_model = np.bincount(battles.a, minlength=len(battles.models)) + np.bincount(
        battles.b, minlength=len(battles.models)
    )
    expected = {m: int(per_model[k]) for k, m in enumerate(battles.models) if per_model[k]}
    board_votes = {r["model"]: r["votes"] for r in rows}
    vote_mismatch = sorted(
        m for m in set(expected) | set(board_votes) if expected.get(m) != board_votes.get(m)
    )
    stages = {s["name"]: s["removed"] for s in meta["stages"]}
    position = meta.get("position") or {}

    print()
    print(f"Chatbot Arena replay: {n} battles{' (sample)' if args.sample else ''}")
    print(f"  {'step':42} {'seconds':>8} {'peak MiB':>9}")
    print(f"  {'expand + write clean-battle JSON (here)':42} {prepare_s:8.1f} {'':>9}")
    for s in steps:
        print(f"  {s.name:42} {s.seconds:8.1f} {s.peak_mib:9.0f}")
    print(f"  import rate {n / steps[1].seconds:,.0f} battles/s; database {db_mib:.0f} MiB")
    print()
    board = [
        ("votes total / counted / in board", f"{meta['votes_total']} / "
         f"{meta['votes_counted']} / {meta['votes']}"),
        ("stages removed", ", ".join(f"{k} {v}" for k, v in stages.items())),
        ("job duration (snapshot duration_ms)", f"{meta['duration_ms'] / 1000:.1f} s"),
        ("models on the board", f"{len(rows)} ({len(battles.models)} in the data)"),
        ("per-model votes equal the input's", "yes" if not vote_mismatch else
         f"no: {', '.join(vote_mismatch[:5])}"),
        ("preliminary (< min_votes)", str(sum(bool(r["preliminary"]) for r in rows))),
        ("left sides (model_a index < model_b)", f"{left_share:.4f}"),
        ("position coef [95%] (log-odds)", f"{position.get('coef')} "
         f"[{position.get('lower')}, {position.get('upper')}], {position.get('elo')} Elo"),
        ("style-control board", f"{len(styled['rows'])} rows, "
         f"{styled['snapshot']['votes']} votes (no style data in the pair counts)"),
        ("vs direct rate_arena: max |diff|", f"{direct_max:.3f} over {len(shared)} models, "
         f"position {direct_coef if direct_coef is None else round(direct_coef, 4)}"),
    ]  # fmt: skip
    if cmp["common"]:
        board += [
            ("vs published 2024-08-13: models", f"{cmp['common']} common; only ours: "
             f"{', '.join(cmp['only_ours']) or '-'}; only published: "
             f"{', '.join(cmp['only_published']) or '-'}"),
            ("  shift to anchor (mixtral = 1114)", f"{cmp['shift']:+.2f}"),
            ("  MAE", f"{cmp['mae']:.2f} rating points"),
            ("  max |diff|", f"{cmp['max']:.2f} ({cmp['worst']}, {cmp['worst_diff']:+.2f})"),
            ("  Spearman rank correlation", f"{cmp['spearman']:.5f}"),
        ]  # fmt: skip
    else:
        board.append(("vs published", f"{ANCHOR} is not on the board: no comparison"))
    width = max(len(k) for k, _ in board)
    for key, value in board:
        print(f"  {key:{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
