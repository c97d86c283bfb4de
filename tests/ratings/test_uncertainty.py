"""Sandwich covariance, exact multinomial resampling and the bootstrap refits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import ratings.uncertainty as unc
from ratings import (
    battles_as_rows,
    bootstrap_pairwise,
    bt_pairwise,
    bt_score,
    fisher_pairwise,
    group_battles,
    pair_counts,
    sandwich_pairwise,
)
from ratings.bt import _information, three_columns
from ratings.sampling import multinomial_counts
from ratings.simulate import simulate_battles

TIES = ["half", "davidson", "rao-kupper"]


def battles(seed: int, n: int = 6, m: int = 2000, tie_rate: float = 0.3, ties: str = "davidson"):
    rng = np.random.default_rng(seed)
    return simulate_battles(rng.normal(0, 0.7, n), m, rng, tie_rate, ties=ties)  # type: ignore[arg-type]


@pytest.mark.parametrize("ties", TIES)
def test_sandwich_is_the_same_on_grouped_and_raw_battles(ties: str) -> None:
    a, b, o = battles(0)
    grouped, raw = group_battles(a, b, o), battles_as_rows(a, b, o)
    cov_g = sandwich_pairwise(grouped, bt_pairwise(grouped, ties=ties))
    cov_r = sandwich_pairwise(raw, bt_pairwise(raw, ties=ties))
    np.testing.assert_allclose(cov_g, cov_r, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("ties", TIES)
def test_sandwich_meat_is_the_sum_of_per_battle_score_outer_products(ties: str) -> None:
    a, b, o = battles(1, n=4, m=60)
    w = np.random.default_rng(1).uniform(0.5, 2.0, a.size)
    pc = group_battles(a, b, o, weights=w)
    fit = bt_pairwise(pc, ties=ties)
    # One battle at a time: its score is the gradient of its own weighted log-likelihood.
    meat = np.zeros((fit.params.size, fit.params.size))
    for k in range(a.size):
        one = battles_as_rows(a[k : k + 1], b[k : k + 1], o[k : k + 1], 4, w[k : k + 1])
        s = bt_score(fit.params, one, ties, 0.0)
        meat += np.outer(s, s)
    h = _information(fit.params, pc, ties, fit.prior)
    h_inv = np.linalg.inv(h)
    np.testing.assert_allclose(
        sandwich_pairwise(pc, fit), h_inv @ meat @ h_inv, rtol=1e-8, atol=1e-14
    )


def contrast_sd(cov: np.ndarray) -> np.ndarray:
    """Standard deviations of theta_k - theta_0, k >= 1."""
    n = cov.shape[0]
    c = np.eye(n)[1:] - np.eye(n)[0]
    return np.sqrt(np.einsum("ki,ij,kj->k", c, cov, c))


def test_without_ties_sandwich_and_fisher_agree_with_ties_fisher_is_too_wide() -> None:
    a, b, o = battles(2, m=100_000, tie_rate=0.0, ties="score")
    pc = group_battles(a, b, o)
    fit = bt_pairwise(pc)
    ratio = contrast_sd(fisher_pairwise(pc, fit)) / contrast_sd(sandwich_pairwise(pc, fit))
    np.testing.assert_allclose(ratio, 1.0, atol=0.03)

    a, b, o = battles(2, m=100_000, tie_rate=0.35, ties="score")
    pc = group_battles(a, b, o)
    fit = bt_pairwise(pc)
    ratio = contrast_sd(fisher_pairwise(pc, fit)) / contrast_sd(sandwich_pairwise(pc, fit))
    # A tie scores 0.5: its variance is below the Bernoulli variance Fisher assumes.
    assert np.all(ratio > 1.1)


@pytest.mark.parametrize("ties", TIES)
def test_chord_refits_equal_full_newton_refits(ties: str) -> None:
    a, b, o = battles(3, m=3000)
    pc = group_battles(a, b, o)
    fit = bt_pairwise(pc, ties=ties)
    h_inv = unc.chord_matrix(_information(fit.params, pc, ties, 1.0), pc.n_models, 1.0)
    rng = np.random.default_rng(3)
    c3 = three_columns(pc.counts).astype(np.int64)
    draws = [multinomial_counts(c3, rng).astype(float) for _ in range(5)]
    make = unc._half_chord if ties == "half" else unc._generic_chord
    args = (
        (pc, 1.0, fit.params, h_inv, 1e-10)
        if ties == "half"
        else (pc, ties, 1.0, fit.params, h_inv, 1e-10)
    )
    chord = make(*args)  # type: ignore[operator]
    got, ok = chord(draws)
    assert ok.all()
    for k, c in enumerate(draws):
        boot = pair_counts(pc.i, pc.j, np.column_stack([c, np.zeros(len(c))]), pc.n_models)
        ref = bt_pairwise(boot, ties=ties, tol=1e-12).params
        np.testing.assert_allclose(got[k], ref, atol=1e-8)


def test_bootstrap_is_reproducible_and_independent_of_workers() -> None:
    a, b, o = battles(4)
    pc = group_battles(a, b, o)
    one = bootstrap_pairwise(pc, 40, np.random.default_rng(9), workers=1)
    two = bootstrap_pairwise(pc, 40, np.random.default_rng(9), workers=2)
    again = bootstrap_pairwise(pc, 40, np.random.default_rng(9), workers=2)
    other = bootstrap_pairwise(pc, 40, np.random.default_rng(10), workers=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(two, again)
    assert not np.array_equal(one, other)
    assert one.shape == (40, 6)


def test_rounds_the_chord_cannot_settle_fall_back_to_newton(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, o = battles(5)
    pc = group_battles(a, b, o)
    ref = bootstrap_pairwise(pc, 20, np.random.default_rng(1), tol=1e-11)
    monkeypatch.setattr(unc, "_MAX_CHORD", 1)  # every round gives up after one step
    fallback = bootstrap_pairwise(pc, 20, np.random.default_rng(1), tol=1e-11)
    np.testing.assert_allclose(fallback, ref, atol=1e-9)


def test_resampling_grouped_counts_equals_resampling_raw_battles() -> None:
    # The grouped bootstrap draws cell counts; the textbook bootstrap draws battles with
    # replacement and refits them one by one. Same distribution of refitted ratings.
    a, b, o = battles(6, n=4, m=400)
    pc = group_battles(a, b, o)
    rounds = 2000
    grouped = bootstrap_pairwise(pc, rounds, np.random.default_rng(2))
    rng = np.random.default_rng(3)
    raw = np.empty_like(grouped)
    for r in range(rounds):
        pick = rng.integers(0, a.size, a.size)
        raw[r] = bt_pairwise(battles_as_rows(a[pick], b[pick], o[pick], 4)).theta
    for k in range(1, 4):
        g, r = grouped[:, k] - grouped[:, 0], raw[:, k] - raw[:, 0]
        assert stats.ks_2samp(g, r).pvalue > 1e-3
        assert np.std(g) == pytest.approx(np.std(r), rel=0.08)
