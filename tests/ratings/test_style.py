"""Style control: covariates, derivatives, recovery, zero-variance covariates, intervals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ratings.style as style_mod
from ratings import (
    A_WINS,
    B_WINS,
    bootstrap_style,
    bt_pairwise,
    bt_style,
    group_battles,
    rate_battles,
    sandwich_pairwise,
    sandwich_style,
    style_data,
    style_features,
    style_hessian,
    style_loglik,
    style_score,
)
from ratings.simulate import simulate_style_battles

BETA = np.array([0.8, 0.3, 0.2, 0.1])


def simulated(seed: int, n: int = 8, m: int = 20_000):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.6, n)
    return theta, *simulate_style_battles(theta, BETA, m, rng, tie_rate=0.3)


def test_style_features_are_normalized_differences_then_z_scores() -> None:
    sa = np.array([[100, 0, 3, 1], [50, 2, 0, 1], [10, 1, 1, 1]])
    sb = np.array([[60, 1, 3, 1], [50, 0, 2, 1], [30, 1, 0, 1]])
    raw = (sa - sb) / (sa + sb + 1.0)
    x = style_features(sa, sb)
    expected = (raw[:, :3] - raw[:, :3].mean(axis=0)) / raw[:, :3].std(axis=0)
    np.testing.assert_allclose(x[:, :3], expected)
    # Bold is the same on both sides everywhere: no variance, an all-zero column (not 0/0).
    np.testing.assert_array_equal(x[:, 3], 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        style_features(-sa, sb)


@pytest.mark.parametrize("prior", [0.5, 2.0])
def test_score_and_hessian_match_finite_differences(prior: float) -> None:
    _, a, b, o, sa, sb = simulated(0, n=5, m=300)
    w = np.random.default_rng(0).uniform(0.5, 2.0, a.size)
    data = style_data(a, b, o, style_features(sa, sb), 5, w)
    p = np.random.default_rng(1).normal(0, 0.5, 5 + 4)
    eps = 1e-6
    eye = np.eye(p.size)
    fd_grad = np.array(
        [
            (
                style_loglik(p + eps * e, data, prior, 0.7)
                - style_loglik(p - eps * e, data, prior, 0.7)
            )
            / (2 * eps)
            for e in eye
        ]
    )
    fd_hess = np.array(
        [
            (
                style_score(p + eps * e, data, prior, 0.7)
                - style_score(p - eps * e, data, prior, 0.7)
            )
            / (2 * eps)
            for e in eye
        ]
    )
    g, h = style_score(p, data, prior, 0.7), style_hessian(p, data, prior, 0.7)
    assert np.abs(fd_grad - g).max() < 1e-6 * np.abs(g).max()
    assert np.abs(fd_hess - h).max() < 1e-6 * np.abs(h).max()
    assert np.linalg.eigvalsh(h).max() < 0


def test_style_control_removes_the_style_confound() -> None:
    theta, a, b, o, sa, sb = simulated(1, m=100_000)
    board = rate_battles(a, b, o, 8, style_a=sa, style_b=sb)
    plain = bt_pairwise(group_battles(a, b, o, 8))
    centred = theta - theta.mean()
    err_style = np.abs(board.fit.theta - board.fit.theta.mean() - centred).max()
    err_plain = np.abs(plain.theta - plain.theta.mean() - centred).max()
    assert err_style < 0.06
    assert err_plain > 3 * err_style
    # Coefficients are per standard deviation of each covariate.
    x_raw = (sa - sb) / (sa + sb + 1.0)
    truth = BETA * x_raw.std(axis=0)
    assert board.coef is not None and board.coef_lower is not None and board.coef_upper is not None
    np.testing.assert_allclose(board.coef, truth, atol=0.03)
    assert np.all(board.coef_lower < board.coef) and np.all(board.coef < board.coef_upper)


def test_a_covariate_with_zero_variance_is_dropped_not_fatal() -> None:
    _, a, b, o, sa, sb = simulated(2, m=20_000)
    sa, sb = sa.copy(), sb.copy()
    sa[:, 3] = sb[:, 3] = 2.0  # every answer has exactly two bold spans
    with pytest.warns(UserWarning, match="zero variance"):
        board = rate_battles(a, b, o, 8, style_a=sa, style_b=sb)
    fit = board.fit
    assert isinstance(fit, style_mod.StyleFit)
    np.testing.assert_array_equal(fit.dropped, [False, False, False, True])
    assert board.coef is not None and board.coef[3] == 0.0
    # The ratings are real ratings, not 1000 for everyone, and match a fit without that column.
    assert np.ptp(board.rating) > 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        three = bt_style(style_data(a, b, o, style_features(sa[:, :3], sb[:, :3]), 8))
    np.testing.assert_allclose(fit.theta, three.theta, atol=1e-9)


def test_without_informative_covariates_style_control_is_plain_bradley_terry() -> None:
    _, a, b, o, _, _ = simulated(3, m=5000)
    same = np.ones((a.size, 4))
    with pytest.warns(UserWarning):
        data = style_data(a, b, o, style_features(same, same), 8)
    fit = bt_style(data)
    pc = group_battles(a, b, o, 8)
    plain = bt_pairwise(pc)
    np.testing.assert_allclose(fit.theta, plain.theta, atol=1e-9)
    np.testing.assert_allclose(sandwich_style(data, fit), sandwich_pairwise(pc, plain), atol=1e-12)


def test_swapping_sides_and_shuffling_change_nothing() -> None:
    _, a, b, o, sa, sb = simulated(4, m=5000)
    base = bt_style(style_data(a, b, o, style_features(sa, sb), 8))
    o_swap = np.where(o == A_WINS, B_WINS, np.where(o == B_WINS, A_WINS, o))
    swapped = bt_style(style_data(b, a, o_swap, style_features(sb, sa), 8))
    order = np.random.default_rng(4).permutation(a.size)
    shuffled = bt_style(
        style_data(a[order], b[order], o[order], style_features(sa[order], sb[order]), 8)
    )
    for other in (swapped, shuffled):
        np.testing.assert_allclose(other.theta, base.theta, atol=1e-9)
        np.testing.assert_allclose(other.coef, base.coef, atol=1e-9)


def test_bootstrap_refits_are_exact_reproducible_and_agree_with_the_sandwich(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, a, b, o, sa, sb = simulated(5, m=20_000)
    data = style_data(a, b, o, style_features(sa, sb), 8)
    fit = bt_style(data)
    one = bootstrap_style(data, 12, np.random.default_rng(3), fit=fit, workers=1, tol=1e-10)
    two = bootstrap_style(data, 12, np.random.default_rng(3), fit=fit, workers=2, tol=1e-10)
    np.testing.assert_array_equal(one, two)
    # Chord refits equal full Newton refits of the same resampled battles.
    monkeypatch.setattr(style_mod, "_MAX_CHORD", 1)
    newton = bootstrap_style(data, 12, np.random.default_rng(3), fit=fit, workers=1, tol=1e-10)
    np.testing.assert_allclose(one, newton, atol=1e-8)
    monkeypatch.undo()
    boot = bootstrap_style(data, 400, np.random.default_rng(4), fit=fit)
    sd_boot = boot.std(axis=0)
    sd_sandwich = np.sqrt(np.diag(sandwich_style(data, fit)))
    # Strengths are identified only up to the prior's pull on their mean; compare contrasts.
    contrast = np.eye(8)[1:] - np.eye(8)[0]
    sd_c_boot = (boot[:, :8] @ contrast.T).std(axis=0)
    cov = sandwich_style(data, fit)[:8, :8]
    sd_c_sand = np.sqrt(np.diag(contrast @ cov @ contrast.T))
    np.testing.assert_allclose(sd_c_boot / sd_c_sand, 1.0, atol=0.15)
    np.testing.assert_allclose(sd_boot[8:] / sd_sandwich[8:], 1.0, atol=0.15)


def test_style_needs_both_sides_and_half_ties() -> None:
    _, a, b, o, sa, sb = simulated(6, m=500)
    with pytest.raises(ValueError, match="both style_a and style_b"):
        rate_battles(a, b, o, 8, style_a=sa)
    with pytest.raises(ValueError, match="half"):
        rate_battles(a, b, o, 8, style_a=sa, style_b=sb, ties="davidson")
