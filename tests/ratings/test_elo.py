"""Online Elo in the public arena convention: K=4, base 10, scale 400, start 1000, tie = 0.5."""

from __future__ import annotations

import numpy as np
import pytest

from ratings import A_WINS, B_WINS, BOTH_BAD, TIE, elo_online
from ratings.simulate import simulate_battles


def test_first_battles_by_hand() -> None:
    # Equal ratings: expected score 0.5, so the winner gains K / 2 = 2 points.
    r = elo_online([0], [1], [A_WINS])
    np.testing.assert_allclose(r, [1002.0, 998.0])
    # Then 1 beats 0: expected score of 1 is 1 / (1 + 10^(4 / 400)).
    e1 = 1 / (1 + 10 ** ((1002 - 998) / 400))
    r = elo_online([0, 1], [1, 0], [A_WINS, A_WINS])
    np.testing.assert_allclose(r, [1002 - 4 * (1 - e1), 998 + 4 * (1 - e1)])


@pytest.mark.parametrize("tie", [TIE, BOTH_BAD])
def test_a_tie_scores_half(tie: int) -> None:
    r = elo_online([0, 0], [1, 1], [A_WINS, tie])
    e0 = 1 / (1 + 10 ** ((998 - 1002) / 400))
    np.testing.assert_allclose(r, [1002 + 4 * (0.5 - e0), 998 - 4 * (0.5 - e0)])


def test_options_and_conservation() -> None:
    rng = np.random.default_rng(0)
    a, b, o = simulate_battles(rng.normal(size=5), 2000, rng, 0.2)
    r = elo_online(a, b, o, 5, k=32, init=1500)
    # Every update moves points from one side to the other: the mean never changes.
    assert r.mean() == pytest.approx(1500.0)
    # Unused models keep the start rating.
    np.testing.assert_array_equal(elo_online([0], [1], [B_WINS], n_models=4)[2:], [1000.0, 1000.0])


def test_swapping_sides_changes_nothing_but_order_matters() -> None:
    rng = np.random.default_rng(1)
    a, b, o = simulate_battles(rng.normal(size=6), 3000, rng, 0.3)
    swapped = np.where(o == A_WINS, B_WINS, np.where(o == B_WINS, A_WINS, o))
    np.testing.assert_allclose(elo_online(b, a, swapped), elo_online(a, b, o), rtol=0, atol=1e-9)
    order = rng.permutation(a.size)
    assert not np.allclose(elo_online(a[order], b[order], o[order]), elo_online(a, b, o))


def test_elo_tracks_strength() -> None:
    rng = np.random.default_rng(2)
    theta = np.linspace(-1.5, 1.5, 8)
    a, b, o = simulate_battles(theta, 40_000, rng, 0.2)
    r = elo_online(a, b, o)
    assert np.all(np.diff(r) > 0)
