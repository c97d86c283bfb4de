"""Elo scale, anchoring, intervals, upper-bound ranks and the `rate_battles` entry point."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ratings import (
    ELO_PER_UNIT,
    Leaderboard,
    group_battles,
    inverse_pair_weights,
    normal_intervals,
    predicted_win_rate_matrix,
    rank_lower_bound,
    rank_upper_bound,
    rate_battles,
    rate_pairs,
    to_elo,
)
from ratings.bt import Ties
from ratings.simulate import simulate_battles


def battles(seed: int = 0, n: int = 6, m: int = 4000):
    rng = np.random.default_rng(seed)
    return simulate_battles(rng.normal(0, 0.8, n), m, rng, 0.3)


def test_rank_upper_bound_counts_models_surely_better() -> None:
    lower = np.array([10.0, 8.0, 4.0, 1.0, np.nan])
    upper = np.array([12.0, 11.0, 9.0, 3.0, np.nan])
    # Model 2 (upper 9) is surely below model 0 (lower 10) only; model 3 below 0, 1 and 2.
    np.testing.assert_array_equal(rank_upper_bound(lower, upper), [1, 1, 2, 4, 0])
    # Ties in bounds do not count as surely better.
    np.testing.assert_array_equal(
        rank_upper_bound(np.array([5.0, 1.0]), np.array([6.0, 5.0])), [1, 1]
    )


def test_rank_lower_bound_counts_models_possibly_better() -> None:
    lower = np.array([10.0, 8.0, 4.0, 1.0, np.nan])
    upper = np.array([12.0, 11.0, 9.0, 3.0, np.nan])
    # Model 0 (lower 10) may be passed by model 1 (upper 11); model 1 (lower 8) by 0 and 2
    # (upper 9); model 2 (lower 4) by 0 and 1, not by 3 (upper 3); model 3 by all three.
    np.testing.assert_array_equal(rank_lower_bound(lower, upper), [2, 3, 3, 4, 0])
    # Equal bounds count as possibly better (the opposite of rank_upper_bound's strict test).
    np.testing.assert_array_equal(
        rank_lower_bound(np.array([5.0, 1.0]), np.array([6.0, 5.0])), [2, 2]
    )
    # A point interval (an anchored model) does not count itself.
    np.testing.assert_array_equal(
        rank_lower_bound(np.array([3.0, 3.0, 7.0]), np.array([3.0, 3.0, 8.0])), [3, 3, 1]
    )
    np.testing.assert_array_equal(rank_lower_bound(np.full(2, np.nan), np.full(2, np.nan)), [0, 0])
    assert rank_lower_bound(np.zeros(0), np.zeros(0)).shape == (0,)


def test_rank_bounds_bracket_every_model_against_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        mid = np.round(rng.normal(0, 3, n))  # rounded: many exactly equal bounds
        half = np.round(rng.uniform(0, 4, n))
        lower, upper = mid - half, mid + half
        lower[rng.random(n) < 0.2] = np.nan
        upper[np.isnan(lower)] = np.nan
        ub, lb = rank_upper_bound(lower, upper), rank_lower_bound(lower, upper)
        rated = np.isfinite(lower)
        for k in range(n):
            others = rated & (np.arange(n) != k)
            if rated[k]:
                assert lb[k] == 1 + np.sum(upper[others] >= lower[k])
                assert ub[k] == 1 + np.sum(lower[others] > upper[k])
            else:
                assert ub[k] == lb[k] == 0
        assert np.all(ub <= lb)


def test_leaderboard_fills_in_rank_lb_for_positional_construction() -> None:
    lower, upper = np.array([1.0, 2.0, np.nan]), np.array([3.0, 4.0, np.nan])
    board = Leaderboard(
        np.array([2.0, 3.0, np.nan]),
        lower,
        upper,
        rank_upper_bound(lower, upper),
        np.array([5, 5, 0]),
        "sandwich",
        0.95,
        rate_battles(*battles(0, n=3, m=100)).fit,
    )
    np.testing.assert_array_equal(board.rank_lb, [2, 2, 0])
    assert board.position_coef is None and board.coef is None
    with pytest.raises(ValueError, match="rank_lb"):
        Leaderboard(
            board.rating,
            lower,
            upper,
            board.rank_ub,
            board.battles,
            "sandwich",
            0.95,
            board.fit,
            rank_lb=np.array([1, 2]),
        )


def test_elo_scale_anchor_and_centre() -> None:
    theta = np.array([0.0, math.log(10.0), -1.0])
    assert math.isclose(ELO_PER_UNIT, 400 / math.log(10))
    centred = to_elo(theta)
    assert centred.mean() == pytest.approx(1000.0)
    assert centred[1] - centred[0] == pytest.approx(400.0)  # a factor 10 in odds is 400 Elo
    anchored = to_elo(theta, anchor=(2, 1114.0))
    assert anchored[2] == 1114.0
    np.testing.assert_allclose(anchored - anchored[2], centred - centred[2])
    stack = to_elo(np.stack([theta, theta + 5.0]), anchor=(0, 1000.0))
    np.testing.assert_allclose(stack[0], stack[1])


def test_normal_intervals_and_predicted_win_rates() -> None:
    lo, up = normal_intervals(np.array([1000.0]), np.array([4.0]))
    assert up[0] - 1000.0 == pytest.approx(1.959964 * 2.0, rel=1e-6)
    assert 1000.0 - lo[0] == pytest.approx(up[0] - 1000.0)
    p = predicted_win_rate_matrix(np.array([1400.0, 1000.0]))
    assert p[0, 1] == pytest.approx(10 / 11)
    np.testing.assert_allclose(p + p.T, 1.0)


def test_sandwich_board_is_consistent() -> None:
    a, b, o = battles()
    board = rate_battles(a, b, o)
    assert board.rating.mean() == pytest.approx(1000.0)
    assert board.covariance is not None and board.samples is None
    half = 1.959964 * np.sqrt(np.diag(board.covariance))
    np.testing.assert_allclose(board.upper - board.rating, half, rtol=1e-6)
    np.testing.assert_allclose(board.rating - board.lower, half, rtol=1e-6)
    np.testing.assert_array_equal(board.rank_ub, rank_upper_bound(board.lower, board.upper))
    np.testing.assert_array_equal(board.rank_lb, rank_lower_bound(board.lower, board.upper))
    np.testing.assert_array_equal(
        board.battles, np.bincount(a, minlength=6) + np.bincount(b, minlength=6)
    )
    order = board.order()
    assert np.all(np.diff(board.rating[order]) <= 0)
    # The same as grouping first.
    again = rate_pairs(group_battles(a, b, o))
    np.testing.assert_array_equal(board.rating, again.rating)
    np.testing.assert_array_equal(board.upper, again.upper)


def test_anchored_board_and_bootstrap_board() -> None:
    a, b, o = battles(1)
    board = rate_battles(a, b, o, anchor=(3, 1114.0))
    assert board.rating[3] == 1114.0
    assert board.lower[3] == board.upper[3] == 1114.0  # the anchor is fixed by definition
    boot = rate_battles(
        a, b, o, anchor=(3, 1114.0), ci="bootstrap", rounds=300, rng=np.random.default_rng(0)
    )
    assert boot.samples is not None and boot.samples.shape == (300, 6)
    np.testing.assert_allclose(boot.samples[:, 3], 1114.0)
    np.testing.assert_array_equal(boot.rating, board.rating)
    others = np.arange(6) != 3
    width_ratio = (boot.upper - boot.lower)[others] / (board.upper - board.lower)[others]
    np.testing.assert_allclose(width_ratio, 1.0, atol=0.2)


def test_models_without_battles_are_unrated() -> None:
    a, b, o = battles(2, n=4)
    board = rate_battles(a, b, o, n_models=6)
    assert np.all(np.isnan(board.rating[4:])) and np.all(np.isnan(board.upper[4:]))
    np.testing.assert_array_equal(board.rank_ub[4:], 0)
    np.testing.assert_array_equal(board.rank_lb[4:], 0)
    np.testing.assert_array_equal(board.battles[4:], 0)
    assert np.nanmean(board.rating) == pytest.approx(1000.0)
    np.testing.assert_allclose(board.rating[:4], rate_battles(a, b, o).rating, atol=1e-6)
    with pytest.raises(ValueError, match="no battles"):
        rate_battles(a, b, o, n_models=6, anchor=(5, 1000.0))


def test_option_errors() -> None:
    a, b, o = battles(3)
    with pytest.raises(ValueError, match="explicit rng"):
        rate_battles(a, b, o, ci="bootstrap")
    with pytest.raises(ValueError, match="ci must be one of"):
        rate_battles(a, b, o, ci="fisher")
    with pytest.raises(ValueError, match="not in"):
        rate_battles(a, b, o, anchor=(9, 1000.0))
    with pytest.raises(ValueError, match="level"):
        rate_battles(a, b, o, level=95)


def test_disconnected_groups_are_flagged() -> None:
    a, b, o = battles(4, n=3, m=300)
    a2, b2 = np.concatenate([a, a + 3]), np.concatenate([b, b + 3])
    with pytest.warns(UserWarning, match="never played each other"):
        rate_battles(a2, b2, np.concatenate([o, o]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rate_battles(a, b, o)


def test_reweighting_option() -> None:
    rng = np.random.default_rng(5)
    theta = rng.normal(0, 0.8, 5)
    # A lopsided schedule: pair (0, 1) is played far more often than the rest.
    a, b, o = simulate_battles(theta, 3000, rng, 0.3)
    a0, b0, o0 = simulate_battles(
        theta, 20_000, rng, 0.3, model_a=np.zeros(20_000, int), model_b=np.ones(20_000, int)
    )
    a, b, o = np.concatenate([a, a0]), np.concatenate([b, b0]), np.concatenate([o, o0])
    plain = rate_battles(a, b, o)
    reweighted = rate_battles(a, b, o, reweight=True)
    explicit = rate_battles(a, b, o, weights=inverse_pair_weights(a, b))
    np.testing.assert_allclose(reweighted.rating, explicit.rating, atol=1e-9)
    assert not np.allclose(reweighted.rating, plain.rating, atol=0.1)
    # Down-weighting the 20,000 battles of one pair leaves models 0 and 1 less certain.
    assert np.all((reweighted.upper - reweighted.lower)[:2] > (plain.upper - plain.lower)[:2])


@pytest.mark.parametrize("ties", ["half", "davidson", "rao-kupper"])
def test_no_battles_at_all_gives_an_unrated_board(ties: Ties) -> None:
    none = np.array([], dtype=np.int64)
    for ci in ("sandwich", "bootstrap"):
        board = rate_battles(
            none, none, none, 3, ci=ci, rounds=5, rng=np.random.default_rng(0), ties=ties
        )
        assert np.all(np.isnan(board.rating)) and np.all(np.isnan(board.lower))
        np.testing.assert_array_equal(board.rank_ub, 0)
        np.testing.assert_array_equal(board.rank_lb, 0)
        np.testing.assert_array_equal(board.battles, 0)


def test_intervals_do_not_depend_on_battle_order_or_sides() -> None:
    a, b, o = battles(6)
    rng = np.random.default_rng(6)
    order = rng.permutation(a.size)
    flip = rng.random(a.size) < 0.5
    swap = np.where(o == 0, 1, np.where(o == 1, 0, o))
    a2, b2 = np.where(flip, b, a)[order], np.where(flip, a, b)[order]
    o2 = np.where(flip, swap, o)[order]
    for ci in ("sandwich", "bootstrap"):
        one = rate_battles(a, b, o, ci=ci, rounds=200, rng=np.random.default_rng(1))
        two = rate_battles(a2, b2, o2, ci=ci, rounds=200, rng=np.random.default_rng(1))
        np.testing.assert_array_equal(one.rating, two.rating)
        np.testing.assert_array_equal(one.lower, two.lower)
        np.testing.assert_array_equal(one.upper, two.upper)
