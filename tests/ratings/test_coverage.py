"""Do the 95% intervals cover the truth 95% of the time? Simulated data sets with known strengths.

Ties are drawn from a Davidson model, under which "ties count as half" is a misspecified (quasi-)
likelihood. The truth an interval must cover is then the estimator's target: the strengths that the
same estimator (same prior) returns on the expected counts of the design (uniformly random pairs).
Plain Fisher intervals serve as the negative control: with ties they are too wide, so they must
over-cover, which shows the study can tell a right interval from a wrong one.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from ratings import (
    ELO_PER_UNIT,
    Leaderboard,
    bt_pairwise,
    bt_style,
    fisher_pairwise,
    group_battles,
    pair_counts,
    rate_battles,
    rate_pairs,
    style_data,
    style_features,
    to_elo,
)
from ratings.simulate import outcome_probabilities, simulate_battles, simulate_style_battles

LOW, HIGH = 0.93, 0.97


def pseudo_truth(theta: np.ndarray, battles: int, tie_rate: float, ties: str) -> np.ndarray:
    """Target of the estimator: its fit (ties as half, same prior) to the expected counts."""
    n = theta.size
    i, j = (np.array(x) for x in zip(*combinations(range(n), 2), strict=True))
    per_pair = battles / i.size
    probs = outcome_probabilities(theta[i] - theta[j], tie_rate, ties)  # type: ignore[arg-type]
    counts = np.column_stack([per_pair * probs, np.zeros(i.size)])
    return bt_pairwise(pair_counts(i, j, counts, n)).theta


def covered(board: Leaderboard, truth: np.ndarray, skip: int | None = None) -> np.ndarray:
    hit = (board.lower <= truth) & (truth <= board.upper)
    return hit if skip is None else np.delete(hit, skip)


def coverage_study(
    n_sets: int,
    seed: int,
    rounds: int,
    n_models: int = 10,
    battles: int = 6000,
    tie_rate: float = 0.35,
    anchor: bool = False,
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits: dict[str, list[np.ndarray]] = {"sandwich": [], "bootstrap": [], "fisher": []}
    for _ in range(n_sets):
        theta = rng.normal(0.0, 0.6, n_models)
        a, b, o = simulate_battles(theta, battles, rng, tie_rate, ties="davidson")
        pc = group_battles(a, b, o, n_models)
        target = pseudo_truth(theta, battles, tie_rate, "davidson")
        pin = (0, 1000.0) if anchor else None
        truth = to_elo(target, pin)
        skip = 0 if anchor else None  # an anchored model's interval is a point
        sandwich = rate_pairs(pc, anchor=pin)
        boot = rate_pairs(pc, anchor=pin, ci="bootstrap", rounds=rounds, rng=rng)
        hits["sandwich"].append(covered(sandwich, truth, skip))
        hits["bootstrap"].append(covered(boot, truth, skip))
        # Negative control: same intervals with the model-based (Fisher) standard errors.
        fit = sandwich.fit
        w = np.zeros(n_models)
        if anchor:
            w[0] = 1.0
        else:
            w[:] = 1.0 / n_models
        c = np.eye(n_models) - w
        sd = ELO_PER_UNIT * np.sqrt(np.diag(c @ fisher_pairwise(pc, fit) @ c.T))  # type: ignore[arg-type]
        fisher = np.abs(sandwich.rating - truth) <= 1.959964 * sd
        hits["fisher"].append(fisher if skip is None else np.delete(fisher, skip))
    return {k: float(np.mean(np.concatenate(v))) for k, v in hits.items()}


def test_interval_coverage_on_200_simulated_data_sets() -> None:
    # 200 data sets x 16 models: 3200 intervals per method, so a 95% method lands within
    # 0.95 +/- 0.008 (two standard errors) and the 93-97% band is a real test.
    rates = coverage_study(n_sets=200, seed=2024, rounds=400, n_models=16, battles=16_000)
    assert LOW <= rates["sandwich"] <= HIGH, rates
    assert LOW <= rates["bootstrap"] <= HIGH, rates
    assert rates["fisher"] > HIGH, rates


@pytest.mark.slow
@pytest.mark.parametrize("anchor", [False, True])
def test_interval_coverage_on_1000_simulated_data_sets(anchor: bool) -> None:
    rates = coverage_study(n_sets=1000, seed=7 + anchor, rounds=500, anchor=anchor)
    assert LOW <= rates["sandwich"] <= HIGH, rates
    assert LOW <= rates["bootstrap"] <= HIGH, rates
    assert rates["fisher"] > HIGH, rates


@pytest.mark.slow
@pytest.mark.parametrize("ties", ["davidson", "rao-kupper"])
def test_tie_model_sandwich_coverage(ties: str) -> None:
    """A tie model fitted to data from itself: the truth is the generating strengths (up to the
    prior, which the target includes)."""
    rng = np.random.default_rng(31)
    hits = []
    for _ in range(300):
        n = 8
        theta = rng.normal(0.0, 0.6, n)
        a, b = rng.integers(0, n, 3000), rng.integers(0, n - 1, 3000)
        b = b + (b >= a)
        i, j = (np.array(x) for x in zip(*combinations(range(n), 2), strict=True))
        if ties == "davidson":
            probs = outcome_probabilities(theta[a] - theta[b], 0.3, "davidson")
            exp_probs = outcome_probabilities(theta[i] - theta[j], 0.3, "davidson")
        else:
            tau = 0.5
            d = theta[a] - theta[b]
            pa, pb = 1 / (1 + np.exp(tau - d)), 1 / (1 + np.exp(tau + d))
            probs = np.column_stack([pa, pb, 1 - pa - pb])
            de = theta[i] - theta[j]
            ea, eb = 1 / (1 + np.exp(tau - de)), 1 / (1 + np.exp(tau + de))
            exp_probs = np.column_stack([ea, eb, 1 - ea - eb])
        u = rng.random(a.size)
        o = np.where(u < probs[:, 0], 0, np.where(u < probs[:, 0] + probs[:, 1], 1, 2))
        expected = pair_counts(
            i, j, np.column_stack([3000 / i.size * exp_probs, np.zeros(i.size)]), n
        )
        truth = to_elo(bt_pairwise(expected, ties=ties).theta)  # type: ignore[arg-type]
        board = rate_battles(a, b, o, n, ties=ties)  # type: ignore[arg-type]
        hits.append(covered(board, truth))
    rate = float(np.mean(np.concatenate(hits)))
    assert LOW <= rate <= HIGH, rate


@pytest.mark.slow
def test_style_control_coverage() -> None:
    """Style-controlled intervals (sandwich and bootstrap) cover the style-adjusted truth."""
    rng = np.random.default_rng(41)
    beta = np.array([0.8, 0.3, 0.2, 0.1])
    hits: dict[str, list[np.ndarray]] = {"sandwich": [], "bootstrap": []}
    for _ in range(200):
        n = 8
        theta = rng.normal(0.0, 0.6, n)
        a, b, o, sa, sb = simulate_style_battles(theta, beta, 6000, rng, tie_rate=0.3)
        # Target: the same estimator on the expected outcomes of these very battles.
        x_raw = (sa - sb) / (sa + sb + 1.0)
        z = theta[a] - theta[b] + x_raw @ beta
        data = style_data(a, b, o, style_features(sa, sb), n)
        expected = type(data)(
            data.a, data.b, 1 / (1 + np.exp(-z)), data.xt, data.weight, n, data.dropped
        )
        truth = to_elo(bt_style(expected).theta)
        for ci in ("sandwich", "bootstrap"):
            board = rate_battles(a, b, o, n, style_a=sa, style_b=sb, ci=ci, rounds=400, rng=rng)
            hits[ci].append(covered(board, truth))
    rates = {k: float(np.mean(np.concatenate(v))) for k, v in hits.items()}
    assert LOW <= rates["sandwich"] <= HIGH, rates
    assert LOW <= rates["bootstrap"] <= HIGH, rates
