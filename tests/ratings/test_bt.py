"""Bradley–Terry fit: derivatives, optimum, prior, recovery, invariances, tie models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import spearmanr

from ratings import (
    A_WINS,
    B_WINS,
    TIE,
    battles_as_rows,
    bt_hessian,
    bt_loglik,
    bt_pairwise,
    bt_score,
    group_battles,
    pair_counts,
    to_elo,
)
from ratings.simulate import simulate_battles

TIES = ["half", "davidson", "rao-kupper"]


def small_counts(seed: int = 0, n: int = 6, rows: int = 12):
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, rows)
    j = (i + 1 + rng.integers(0, n - 1, rows)) % n
    return pair_counts(i, j, rng.integers(0, 30, (rows, 4)), n, rng.uniform(0.5, 2.0, rows))


def point(ties: str, n: int, seed: int = 1) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=n + (ties != "half"))
    if ties == "rao-kupper":
        p[-1] = 0.6  # tau must be positive
    return p


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("prior", [0.0, 0.7])
def test_score_and_hessian_match_finite_differences(ties: str, prior: float) -> None:
    pc = small_counts()
    p = point(ties, pc.n_models)
    eps = 1e-6
    eye = np.eye(p.size)
    fd_grad = np.array(
        [
            (bt_loglik(p + eps * e, pc, ties, prior) - bt_loglik(p - eps * e, pc, ties, prior))
            / (2 * eps)
            for e in eye
        ]
    )
    fd_hess = np.array(
        [
            (bt_score(p + eps * e, pc, ties, prior) - bt_score(p - eps * e, pc, ties, prior))
            / (2 * eps)
            for e in eye
        ]
    )
    g = bt_score(p, pc, ties, prior)
    h = bt_hessian(p, pc, ties, prior)
    scale = np.abs(g).max()
    assert np.abs(fd_grad - g).max() < 1e-6 * scale
    assert np.abs(fd_hess - h).max() < 1e-6 * np.abs(h).max()
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    # Concave: the Hessian is negative semi-definite.
    assert np.linalg.eigvalsh(h).max() < 1e-9 * np.abs(h).max()


@pytest.mark.parametrize("ties", TIES)
def test_fit_is_a_stationary_maximum(ties: str) -> None:
    pc = small_counts(3)
    fit = bt_pairwise(pc, ties=ties)
    g = bt_score(fit.params, pc, ties, 1.0)
    assert np.abs(g).max() < 1e-8 * pc.counts.sum()
    # No nearby point is better.
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = fit.params + 1e-3 * rng.normal(size=fit.params.size)
        assert bt_loglik(q, pc, ties, 1.0) < fit.loglik


def test_unpenalized_fit_matches_a_generic_optimizer() -> None:
    a, b, o = simulate_battles(np.linspace(-1, 1, 5), 800, np.random.default_rng(4), 0.3)
    pc = group_battles(a, b, o)
    fit = bt_pairwise(pc, prior=0.0)

    def loss(t: np.ndarray) -> tuple[float, np.ndarray]:
        return -bt_loglik(t, pc, "half", 0.0), -bt_score(t, pc, "half", 0.0)

    ref = minimize(loss, np.zeros(5), jac=True, method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(fit.theta - fit.theta.mean(), ref - ref.mean(), atol=1e-6)


def unbeaten(wins: int, n_field: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Model 0 beats every other model `wins` times; the others play evenly among themselves."""
    rng = np.random.default_rng(seed)
    a, b, o = simulate_battles(np.zeros(n_field), 400, rng, 0.2)
    a, b = a + 1, b + 1
    field = np.repeat(np.arange(1, n_field + 1), wins)
    return (
        np.concatenate([a, np.zeros(field.size, dtype=np.int64)]),
        np.concatenate([b, field]),
        np.concatenate([o, np.full(field.size, A_WINS)]),
    )


def test_an_unbeaten_model_stays_finite_and_does_not_depend_on_the_optimizer() -> None:
    a, b, o = unbeaten(10)
    pc = group_battles(a, b, o)
    with pytest.raises(ValueError, match="strongly connected"):
        bt_pairwise(pc, prior=0.0)
    fit = bt_pairwise(pc)
    gap = to_elo(fit.theta)[0] - to_elo(fit.theta)[1:].mean()
    # 40 straight wins against an even field: far above it, but finite (prior: theta ~ log(2w)).
    assert 400 < gap < 1000
    # The answer is a property of the data, not of where the optimizer started or stopped.
    other = bt_pairwise(pc, tol=1e-6, init=np.full(5, 3.0))
    assert abs(to_elo(other.theta)[0] - to_elo(fit.theta)[0]) < 1e-3
    # More straight wins raise the rating, slowly (logarithmically).
    more = bt_pairwise(group_battles(*unbeaten(100)))
    gap_more = to_elo(more.theta)[0] - to_elo(more.theta)[1:].mean()
    assert gap < gap_more < gap + 500


def test_a_model_that_never_won_stays_finite() -> None:
    a, b, o = unbeaten(10)
    fit = bt_pairwise(group_battles(b, a, o))  # swap sides: model 0 now always loses
    assert np.all(np.isfinite(fit.theta))
    assert to_elo(fit.theta)[0] < to_elo(fit.theta)[1:].min() - 300


def test_recovery_from_simulation() -> None:
    # 100 models and 400k battles: a ranking only this good if the fit is right, since the
    # rating gaps between neighbours (~10 Elo) are only a few standard errors.
    rng = np.random.default_rng(12)
    theta = rng.normal(0.0, 1.0, 100)
    a, b, o = simulate_battles(theta, 400_000, rng, tie_rate=0.25)
    fit = bt_pairwise(group_battles(a, b, o))
    assert spearmanr(fit.theta, theta).statistic >= 0.99
    err = (fit.theta - fit.theta.mean()) - (theta - theta.mean())
    # Each model has ~8000 battles: standard error ~0.025, so errors stay well inside 0.12.
    assert np.abs(err).max() < 0.12
    assert abs(err.mean()) < 1e-9


def test_swapping_sides_and_shuffling_change_nothing() -> None:
    rng = np.random.default_rng(5)
    a, b, o = simulate_battles(rng.normal(size=8), 3000, rng, 0.3)
    base = bt_pairwise(group_battles(a, b, o))
    swap = {A_WINS: B_WINS, B_WINS: A_WINS}
    o_swapped = np.array([swap.get(x, x) for x in o.tolist()])
    swapped = bt_pairwise(group_battles(b, a, o_swapped))
    order = rng.permutation(a.size)
    shuffled = bt_pairwise(group_battles(a[order], b[order], o[order]))
    np.testing.assert_array_equal(base.theta, swapped.theta)
    np.testing.assert_array_equal(base.theta, shuffled.theta)
    # Flipping only some battles' sides (with their outcomes) is the same data too.
    flip = rng.random(a.size) < 0.5
    fa, fb = np.where(flip, b, a), np.where(flip, a, b)
    fo = np.where(flip, o_swapped, o)
    np.testing.assert_array_equal(base.theta, bt_pairwise(group_battles(fa, fb, fo)).theta)


@pytest.mark.parametrize("ties", TIES)
def test_grouped_fit_equals_the_fit_on_raw_battles(ties: str) -> None:
    rng = np.random.default_rng(6)
    a, b, o = simulate_battles(rng.normal(size=6), 1500, rng, 0.3, ties="davidson")
    grouped = bt_pairwise(group_battles(a, b, o), ties=ties)
    raw = bt_pairwise(battles_as_rows(a, b, o), ties=ties)
    np.testing.assert_allclose(grouped.params, raw.params, rtol=0, atol=1e-9)
    assert grouped.loglik == pytest.approx(raw.loglik, rel=1e-12)


def test_ties_count_as_half_a_win() -> None:
    # Two ties weigh exactly as one win plus one loss; both-bad counts as a tie.
    p = np.array([0.3, -0.2])
    tie = pair_counts([0], [1], [[3, 1, 2, 0]], 2)
    both_bad = pair_counts([0], [1], [[3, 1, 0, 2]], 2)
    decisive = pair_counts([0], [1], [[4, 2, 0, 0]], 2)
    for prior in (0.0, 1.0):
        ref = bt_loglik(p, decisive, "half", prior)
        assert bt_loglik(p, tie, "half", prior) == pytest.approx(ref, rel=1e-14)
        assert bt_loglik(p, both_bad, "half", prior) == pytest.approx(ref, rel=1e-14)
    # An expected score of 4 out of 6 gives theta_0 - theta_1 = log(4 / 2) without a prior.
    fit = bt_pairwise(tie, prior=0.0)
    assert fit.theta[0] - fit.theta[1] == pytest.approx(np.log(2.0), abs=1e-10)
    # The prior pulls towards the reference: the gap shrinks, but only a little.
    shrunk = bt_pairwise(tie, prior=1.0)
    assert 0.8 * np.log(2.0) < shrunk.theta[0] - shrunk.theta[1] < np.log(2.0)


@pytest.mark.parametrize("ties", ["davidson", "rao-kupper"])
def test_tie_models_recover_their_parameters(ties: str) -> None:
    rng = np.random.default_rng(7)
    theta = np.linspace(-1.0, 1.0, 6)
    a, b = rng.integers(0, 6, 200_000), rng.integers(0, 5, 200_000)
    b = b + (b >= a)
    d = theta[a] - theta[b]
    if ties == "davidson":
        nu = 0.6
        e1, e2 = np.exp(d / 2), np.exp(-d / 2)
        pa, pb = e1 / (e1 + e2 + nu), e2 / (e1 + e2 + nu)
        true_tie = np.log(nu)
    else:
        tau = 0.4
        pa, pb = 1 / (1 + np.exp(-(d - tau))), 1 / (1 + np.exp(d + tau))
        true_tie = tau
    u = rng.random(a.size)
    o = np.where(u < pa, A_WINS, np.where(u < pa + pb, B_WINS, TIE))
    fit = bt_pairwise(group_battles(a, b, o), ties=ties)
    assert fit.tie_param == pytest.approx(true_tie, abs=0.02)
    np.testing.assert_allclose(fit.theta - fit.theta.mean(), theta - theta.mean(), atol=0.03)


def test_tie_models_need_ties() -> None:
    pc = pair_counts([0], [1], [[3, 1, 0, 0]], 2)
    with pytest.raises(ValueError, match="needs both ties and decisive"):
        bt_pairwise(pc, ties="davidson")
    with pytest.raises(ValueError, match="ties must be one of"):
        bt_pairwise(pc, ties="glenn-david")  # type: ignore[arg-type]
