"""Benchmark of the ratings package: `python -m bench.ratings [--quick]`.

Times grouping, fit + sandwich intervals, a 1,000-round bootstrap, style control with a 100-round
bootstrap, `rate_arena` with the position term (alone, with style, and alone with a 1,000-round
bootstrap) and the command line end to end, on 1,000,000 synthetic battles over 200 models (20%
ties) and on the 1,670,250 real Chatbot Arena votes in tests/data. For comparison it also times the
straightforward method public arena code uses (FastChat `rating_systems.py`): scipy L-BFGS refitted
from zero on every bootstrap round. That reference is timed on a few rounds and extrapolated.

Wall-clock figures depend on the machine and on what else runs on it; the load average is printed.
Speed is measured here only, never asserted in tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit

from ratings import (
    WINNER_CODES,
    RatingOptions,
    group_battles,
    pair_counts,
    rate_arena,
    rate_battles,
    rate_pairs,
    style_features,
)
from ratings.simulate import simulate_style_battles

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "chatbotarena_20240814_pair_counts.json"
LN10 = float(np.log(10.0))
TARGETS = {
    "grouping": 0.2,
    "fit + sandwich": 0.3,
    "bootstrap, 1000 rounds": 3.0,
    "style fit + 100-round bootstrap": 10.0,
    "CLI end to end (1M-row CSV)": 5.0,
}
# Steps timed without a target of their own.
UNTARGETED = (
    "rate_arena, position (sandwich)",
    "rate_arena, style + position (sandwich)",
    "rate_arena, position, 1000-round bootstrap",
)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of `repeat` runs, and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# `python -m ratings` run through runpy (what -m does), then the process's own peak RSS (VmHWM).
# getrusage() would not do: a child started by vfork inherits the parent's high-water mark.
_CLI_WRAPPER = """
import runpy, sys
sys.argv[0] = "ratings"
try:
    runpy.run_module("ratings", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("VmHWM-KiB", hwm, file=sys.stderr)
sys.exit(code)
"""


# --------------------------------------------------------------------------------------------------
# The reference: what public arena code does (written afresh here, same method and settings).


def reference_cells(
    a: NDArray[np.int64], b: NDArray[np.int64], o: NDArray[np.int64], n: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Unique (model_a, model_b, outcome) cells with counts; a tie or both-bad scores 0.5."""
    score = np.array([1.0, 0.0, 0.5, 0.5])[o]
    code = (a * n + b) * 3 + np.rint(score * 2).astype(np.int64)
    cells, counts = np.unique(code, return_counts=True)
    pair, half = np.divmod(cells, 3)
    return pair // n, pair % n, half / 2.0, counts.astype(np.float64)


def reference_fit(
    i: NDArray[np.int64], j: NDArray[np.int64], y: NDArray, w: NDArray, n: int
) -> NDArray[np.float64]:
    """L-BFGS-B from zero on the weighted log-loss, gtol 1e-6, at most 100 iterations (FastChat)."""

    def loss(r: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        z = LN10 * (r[i] - r[j])
        p = expit(z)
        with np.errstate(divide="ignore"):
            val = -float(np.sum(w * (y * np.log(p) + (1 - y) * np.log1p(-p))))
        g = -LN10 * w * (y - p)
        grad = np.bincount(i, g, n) - np.bincount(j, g, n)
        return val, grad.astype(np.float64)

    res = minimize(
        loss, np.zeros(n), jac=True, method="L-BFGS-B", options={"maxiter": 100, "gtol": 1e-6}
    )
    return res.x


def reference_bootstrap_seconds_per_round(
    cells: tuple[NDArray, NDArray, NDArray, NDArray], n: int, rounds: int, seed: int
) -> float:
    i, j, y, w = cells
    rng = np.random.default_rng(seed)
    total = int(w.sum())
    t0 = time.perf_counter()
    for _ in range(rounds):
        boot = rng.multinomial(total, w / total).astype(np.float64) / total
        reference_fit(i, j, y, boot, n)
    return (time.perf_counter() - t0) / rounds


def reference_style_seconds_per_round(
    a: NDArray[np.int64], b: NDArray[np.int64], y: NDArray, x: NDArray, n: int, rounds: int
) -> float:
    """FastChat `fit_contextual_bt`: L-BFGS-B on all battles with covariates, reg 0.5."""
    rng = np.random.default_rng(0)
    m, f = x.shape
    t0 = time.perf_counter()
    for _ in range(rounds):
        idx = rng.integers(0, m, m)
        aa, bb, yy, xx = a[idx], b[idx], y[idx], x[idx]

        def loss(
            p: NDArray[np.float64], aa=aa, bb=bb, yy=yy, xx=xx
        ) -> tuple[float, NDArray[np.float64]]:
            r, beta = p[:n], p[n:]
            z = LN10 * (r[aa] - r[bb]) + xx @ beta
            q = expit(z)
            with np.errstate(divide="ignore"):
                val = -float(np.sum(yy * np.log(q) + (1 - yy) * np.log1p(-q))) + 0.25 * float(p @ p)
            e = yy - q
            g = 0.5 * p
            g[:n] -= LN10 * (np.bincount(aa, e, n) - np.bincount(bb, e, n))
            g[n:] -= xx.T @ e
            return val, g

        minimize(
            loss,
            np.zeros(n + f),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 100, "gtol": 1e-6},
        )
    return (time.perf_counter() - t0) / rounds


# --------------------------------------------------------------------------------------------------


def write_csv(path: Path, names: list[str], a: NDArray, b: NDArray, o: NDArray) -> None:
    winners = {code: name for name, code in WINNER_CODES.items()}
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model_a", "model_b", "winner"])
        writer.writerows(
            zip(
                (names[k] for k in a.tolist()),
                (names[k] for k in b.tolist()),
                (winners[k] for k in o.tolist()),
                strict=True,
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratings")
    parser.add_argument("--quick", action="store_true", help="fewer reference rounds")
    parser.add_argument("--battles", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=200)
    args = parser.parse_args(argv)
    ref_rounds = 3 if args.quick else 10

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(20240814)
    n = args.models
    theta = rng.normal(0.0, 1.0, n)
    beta = np.array([1.0, 0.3, 0.2, 0.1])
    a, b, o, sa, sb = simulate_style_battles(
        theta, beta, args.battles, rng, tie_rate=0.2, ties="constant"
    )
    print(f"\nsynthetic: {a.size:,} battles, {n} models, {np.mean(o >= 2):.1%} ties")

    results: dict[str, float] = {}
    results["grouping"], pc = timed(lambda: group_battles(a, b, o, n), repeat=5)
    print(f"  grouped into {pc.n_rows:,} unordered pairs")
    results["fit + sandwich"], board = timed(lambda: rate_pairs(pc), repeat=5)
    results["bootstrap, 1000 rounds"], boot = timed(
        lambda: rate_pairs(pc, ci="bootstrap", rounds=1000, rng=np.random.default_rng(1))
    )
    results["style fit + 100-round bootstrap"], style = timed(
        lambda: rate_battles(
            a,
            b,
            o,
            n,
            style_a=sa,
            style_b=sb,
            ci="bootstrap",
            rounds=100,
            rng=np.random.default_rng(2),
        )
    )

    results["rate_arena, position (sandwich)"], arena_pos = timed(
        lambda: rate_arena(a, b, o, n), repeat=3
    )
    results["rate_arena, style + position (sandwich)"], arena_style = timed(
        lambda: rate_arena(a, b, o, n, style_a=sa, style_b=sb), repeat=3
    )
    boot_options = RatingOptions(ci="bootstrap", rounds=1000, seed=4)
    results["rate_arena, position, 1000-round bootstrap"], _ = timed(
        lambda: rate_arena(
            a, b, o, n, options=boot_options, rng=np.random.default_rng(boot_options.seed)
        )
    )

    names = [f"model-{k:03d}" for k in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "battles.csv"
        write_csv(path, names, a, b, o)
        size = path.stat().st_size
        cmd = [sys.executable, "-c", _CLI_WRAPPER, str(path), "--format", "csv"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        results["CLI end to end (1M-row CSV)"] = time.perf_counter() - t0
        if done.returncode != 0:
            print(done.stderr)
            return 1
        cli_mib = float(done.stderr.strip().rsplit(" ", 1)[-1]) / 1024.0

    print(f"\n  {'step':<44}{'seconds':>10}{'target':>10}")
    for step, seconds in results.items():
        if step in UNTARGETED:
            print(f"  {step:<44}{seconds:>10.3f}{'-':>10}")
            continue
        mark = "ok" if seconds <= TARGETS[step] else "OVER"
        print(f"  {step:<44}{seconds:>10.3f}{TARGETS[step]:>10.1f}  {mark}")
    print(f"  (CLI: python -m ratings FILE --format csv, on a {size / 1e6:.0f} MB CSV)")
    print(
        f"  (simulated without a side bias: position term {arena_pos.position_coef:+.4f} alone, "
        f"{arena_style.position_coef:+.4f} with style)"
    )

    real = json.loads(REAL.read_text())
    x = np.asarray(real["X"])
    rpc = pair_counts(x[:, 0], x[:, 1], real["Y"], len(real["models"]))
    anchor = (real["models"].index("mixtral-8x7b-instruct-v0.1"), 1114.0)
    t_fit, _ = timed(lambda: rate_pairs(rpc, anchor=anchor), repeat=5)
    t_boot, _ = timed(
        lambda: rate_pairs(
            rpc, anchor=anchor, ci="bootstrap", rounds=1000, rng=np.random.default_rng(3)
        )
    )
    print(
        f"\nreal votes: {int(rpc.n_battles):,} battles, {rpc.n_models} models, {rpc.n_rows:,} pairs"
    )
    print(f"  fit + sandwich                    {t_fit:10.3f}")
    print(f"  bootstrap, 1000 rounds            {t_boot:10.3f}")

    print(
        f"\nreference (scipy L-BFGS from zero every round), {ref_rounds} rounds timed, extrapolated"
    )
    cells = reference_cells(a, b, o, n)
    per_round = reference_bootstrap_seconds_per_round(cells, n, ref_rounds, 0)
    ours = results["bootstrap, 1000 rounds"]
    print(f"  synthetic: {cells[0].size:,} cells, {per_round * 1e3:.1f} ms per round")
    print(
        f"    1000 rounds: {per_round * 1000:.1f} s on one core, {per_round * 500:.1f} s on two "
        f"(assuming perfect scaling); ours {ours:.2f} s"
    )
    print(
        f"    ratio: {per_round * 1000 / ours:.0f}x (reference on one core), "
        f"{per_round * 500 / ours:.0f}x (reference on two cores)"
    )
    # The real set only exists as unordered pairs: its cells are (pair, outcome).
    real_a = np.repeat(rpc.i, 3)
    real_b = np.repeat(rpc.j, 3)
    real_y = np.tile([1.0, 0.0, 0.5], rpc.n_rows)
    real_w = np.column_stack([rpc.counts[:, 0], rpc.counts[:, 1], rpc.counts[:, 2:].sum(axis=1)])
    keep = real_w.reshape(-1) > 0
    real_cells = (real_a[keep], real_b[keep], real_y[keep], real_w.reshape(-1)[keep])
    real_round = reference_bootstrap_seconds_per_round(real_cells, rpc.n_models, ref_rounds, 0)
    print(
        f"  real: {keep.sum():,} cells, {real_round * 1e3:.1f} ms per round; 1000 rounds "
        f"{real_round * 1000:.1f} s on one core, {real_round * 500:.1f} s on two; ours "
        f"{t_boot:.2f} s: {real_round * 1000 / t_boot:.0f}x / {real_round * 500 / t_boot:.0f}x"
    )
    style_rounds = 1 if args.quick else 2
    y = np.array([1.0, 0.0, 0.5, 0.5])[o]
    style_round = reference_style_seconds_per_round(
        a, b, y, style_features(sa, sb), n, style_rounds
    )
    ours_style = results["style fit + 100-round bootstrap"]
    print(
        f"  style control: {style_round:.1f} s per round; 100 rounds "
        f"{style_round * 100 / 60:.1f} min on one core, {style_round * 50 / 60:.1f} min on two; "
        f"ours {ours_style:.1f} s: {style_round * 100 / ours_style:.0f}x / "
        f"{style_round * 50 / ours_style:.0f}x"
    )

    # Sanity: our fit and the reference fit agree (reference is unpenalized and stops at gtol).
    ref = reference_fit(*cells, n)
    ours_theta = board.fit.theta
    diff = (
        400 / LN10 * LN10 * ((ref - ref.mean()) - (ours_theta / LN10 - (ours_theta / LN10).mean()))
    )
    print(f"  max |ours - reference| rating: {np.abs(diff).max():.3f} Elo")
    print(f"  bootstrap ok: {boot.samples.shape}, style coefficients {np.round(style.coef, 3)}")

    print(f"\npeak memory: this process {peak_mib():.0f} MiB, CLI {cli_mib:.0f} MiB (target 1024)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
