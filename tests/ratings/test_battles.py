"""Grouping battles into pair counts, reweighting and the count / win-rate matrices."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import ratings.battles as battles_mod
from ratings import (
    A_WINS,
    B_WINS,
    BOTH_BAD,
    TIE,
    battle_count_matrix,
    battles_as_rows,
    bt_pairwise,
    group_battles,
    inverse_pair_weights,
    model_win_rates,
    pair_counts,
    reweight_pair_counts,
    win_rate_matrix,
)
from ratings.simulate import simulate_battles


def random_battles(seed: int, n: int = 7, m: int = 600) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return simulate_battles(rng.normal(size=n), m, rng, tie_rate=0.3)


def naive_counts(a: np.ndarray, b: np.ndarray, o: np.ndarray) -> Counter[tuple[int, int, int]]:
    """(low, high, outcome from low's side) -> count, one battle at a time."""
    out: Counter[tuple[int, int, int]] = Counter()
    swap = {A_WINS: B_WINS, B_WINS: A_WINS, TIE: TIE, BOTH_BAD: BOTH_BAD}
    for x, y, z in zip(a.tolist(), b.tolist(), o.tolist(), strict=True):
        if x < y:
            out[(x, y, z)] += 1
        else:
            out[(y, x, swap[z])] += 1
    return out


def as_counter(pc: battles_mod.PairCounts) -> Counter[tuple[int, int, int]]:
    out: Counter[tuple[int, int, int]] = Counter()
    for i, j, row in zip(pc.i.tolist(), pc.j.tolist(), pc.counts, strict=True):
        for outcome, c in enumerate(row):
            if c:
                out[(i, j, outcome)] += int(c)
    return out


def test_grouping_matches_a_battle_by_battle_count() -> None:
    a, b, o = random_battles(0)
    pc = group_battles(a, b, o)
    assert as_counter(pc) == naive_counts(a, b, o)
    assert np.all(pc.i < pc.j)
    assert pc.n_battles == a.size
    assert len(set(zip(pc.i.tolist(), pc.j.tolist(), strict=True))) == pc.n_rows


def test_dense_and_sorting_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, o = random_battles(1, n=30, m=2000)
    dense = group_battles(a, b, o, 30)
    monkeypatch.setattr(battles_mod, "_DENSE_LIMIT", 0)
    sorted_path = group_battles(a, b, o, 30)
    for name in ("i", "j", "counts", "weight"):
        np.testing.assert_array_equal(getattr(dense, name), getattr(sorted_path, name))


def test_weighted_grouping_splits_rows_by_weight_and_keeps_totals() -> None:
    a, b, o = random_battles(2)
    w = np.random.default_rng(2).choice([0.5, 1.0, 2.0], size=a.size)
    pc = group_battles(a, b, o, weights=w)
    # Each row holds battles of a single weight, so the rows are finer than the pairs.
    assert pc.n_rows > group_battles(a, b, o).n_rows
    weighted = Counter[tuple[int, int, int]]()
    for x, y, z, wt in zip(a.tolist(), b.tolist(), o.tolist(), w.tolist(), strict=True):
        (lo, hi) = (x, y) if x < y else (y, x)
        zz = z if x < y or z >= TIE else 1 - z
        weighted[(lo, hi, zz)] += wt
    got = Counter[tuple[int, int, int]]()
    for i, j, row, wt in zip(pc.i.tolist(), pc.j.tolist(), pc.counts, pc.weight, strict=True):
        for outcome, c in enumerate(row):
            if c:
                got[(i, j, outcome)] += c * wt
    assert got.keys() == weighted.keys()
    for key, value in weighted.items():
        assert got[key] == pytest.approx(value)


def test_battles_as_rows_keeps_every_battle() -> None:
    a, b, o = random_battles(3, m=50)
    raw = battles_as_rows(a, b, o)
    assert raw.n_rows == 50
    np.testing.assert_array_equal(raw.counts.argmax(axis=1), o)
    np.testing.assert_array_equal(raw.counts.sum(axis=1), np.ones(50))
    assert as_counter(group_battles(a, b, o)) == naive_counts(a, b, o)


@pytest.mark.parametrize(
    ("a", "b", "o", "message"),
    [
        ([0, 1], [1, 1], [0, 0], "itself"),
        ([0, 1], [1, 5], [0, 0], r"\[0, 3\)"),
        ([0, 1], [1, 2], [0, 4], "outcome"),
        ([0, 1], [1, 2], [0], "same length"),
        ([0.0, 1.0], [1, 2], [0, 0], "integers"),
    ],
)
def test_invalid_battles_are_rejected(a: list, b: list, o: list, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        group_battles(np.array(a), np.array(b), np.array(o), n_models=3)


def test_pair_counts_validation() -> None:
    with pytest.raises(ValueError, match="itself"):
        pair_counts([0], [0], [[1, 0, 0, 0]], 2)
    with pytest.raises(ValueError, match="non-negative"):
        pair_counts([0], [1], [[-1, 0, 0, 0]], 2)
    three = pair_counts([0], [1], [[3, 2, 1]], 2)
    np.testing.assert_array_equal(three.counts, [[3, 2, 1, 0]])


def test_inverse_pair_weights_follow_the_public_formula() -> None:
    # Pair (0, 1) fought 120 times, (0, 2) 10 times, (1, 2) 60 times; sides mixed.
    a = np.array([0] * 60 + [1] * 60 + [2] * 10 + [1] * 60)
    b = np.array([1] * 60 + [0] * 60 + [0] * 10 + [2] * 60)
    w = inverse_pair_weights(a, b)
    raw = np.concatenate([np.full(120, 1 / 120), np.full(10, 1 / 50), np.full(60, 1 / 60)])
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w.mean() == pytest.approx(1.0)


def test_reweighting_pairs_equals_reweighting_battles() -> None:
    a, b, o = random_battles(4, n=6, m=3000)
    by_battle = group_battles(a, b, o, weights=inverse_pair_weights(a, b))
    by_pair = reweight_pair_counts(group_battles(a, b, o))
    np.testing.assert_allclose(
        bt_pairwise(by_battle).theta, bt_pairwise(by_pair).theta, rtol=0, atol=1e-10
    )
    # The weights change the fit: heavily sampled pairs no longer dominate.
    assert not np.allclose(bt_pairwise(by_pair).theta, bt_pairwise(group_battles(a, b, o)).theta)


def test_count_and_win_rate_matrices() -> None:
    a, b, o = random_battles(5, n=5, m=400)
    pc = group_battles(a, b, o)
    counts = battle_count_matrix(pc)
    assert np.array_equal(counts, counts.T)
    np.testing.assert_array_equal(counts.sum(axis=1), pc.battles_per_model())
    assert counts[1, 3] == np.sum(((a == 1) & (b == 3)) | ((a == 3) & (b == 1)))

    rate = win_rate_matrix(pc)
    played = counts > 0
    np.testing.assert_allclose((rate + rate.T)[played], 1.0)
    assert np.all(np.isnan(np.diag(rate)))
    # Entry [1, 3] by hand: wins of 1 over 3 plus half the ties, over their battles.
    m13 = ((a == 1) & (b == 3)) | ((a == 3) & (b == 1))
    wins = np.sum(m13 & (((a == 1) & (o == A_WINS)) | ((b == 1) & (o == B_WINS))))
    ties = np.sum(m13 & (o >= TIE))
    assert rate[1, 3] == pytest.approx((wins + ties / 2) / m13.sum())
    decisive = win_rate_matrix(pc, ties="exclude")
    assert decisive[1, 3] == pytest.approx(wins / (m13.sum() - ties))


def test_model_win_rates_count_ties_and_both_bad_as_half() -> None:
    a, b, o = random_battles(6, n=5, m=400)
    rates = model_win_rates(a, b, o, 7)
    assert rates.shape == (7,) and np.all(np.isnan(rates[5:]))
    score = {A_WINS: (1.0, 0.0), B_WINS: (0.0, 1.0), TIE: (0.5, 0.5), BOTH_BAD: (0.5, 0.5)}
    points, games = np.zeros(7), np.zeros(7)
    for x, y, z in zip(a.tolist(), b.tolist(), o.tolist(), strict=True):
        points[x] += score[z][0]
        points[y] += score[z][1]
        games[x] += 1
        games[y] += 1
    np.testing.assert_allclose(rates[:5], points[:5] / games[:5])
    # Agrees with the pairwise win-rate matrix weighted by battles.
    pc = group_battles(a, b, o, 7)
    counts = battle_count_matrix(pc)
    by_pair = np.nansum(win_rate_matrix(pc) * counts, axis=1)[:5] / counts.sum(axis=1)[:5]
    np.testing.assert_allclose(rates[:5], by_pair)
    # Two hand-made battles: 0 beats 1, then 1 and 2 tie as both bad.
    np.testing.assert_allclose(
        model_win_rates(np.array([0, 1]), np.array([1, 2]), np.array([A_WINS, BOTH_BAD]), 4),
        [1.0, 0.25, 0.5, np.nan],
    )
    none = np.array([], dtype=np.int64)
    assert np.all(np.isnan(model_win_rates(none, none, none, 3)))
