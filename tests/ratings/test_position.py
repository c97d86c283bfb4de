"""The position (left-side) term: the constant column and its derivatives."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ratings import (
    style_data,
    style_features,
    style_hessian,
    style_loglik,
    style_score,
)
from ratings.simulate import simulate_battles, simulate_style_battles

BETA = np.array([0.8, 0.3, 0.2, 0.1])


def sided(seed: int, gamma: float, n: int = 8, m: int = 20_000):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.6, n)
    return theta, *simulate_battles(theta, m, rng, 0.3, position=gamma)


def no_style(m: int) -> np.ndarray:
    return np.zeros((m, 0))


def test_style_data_appends_a_constant_column_exempt_from_the_drop() -> None:
    _, a, b, o = sided(0, 0.0, m=500)
    data = style_data(a, b, o, no_style(a.size), 8, position=True)
    assert data.position and data.n_coef == 1
    np.testing.assert_array_equal(data.xt, np.ones((1, a.size)))
    np.testing.assert_array_equal(data.dropped, [False])
    # Beside a zero-variance style column: that one is dropped, the constant one is kept.
    x = np.column_stack([np.linspace(-1, 1, a.size), np.zeros(a.size)])
    with pytest.warns(UserWarning, match=r"column\(s\) \[1\]"):
        both = style_data(a, b, o, x, 8, position=True)
    np.testing.assert_array_equal(both.dropped, [False, True, False])
    np.testing.assert_array_equal(both.xt, np.vstack([x[:, 0], np.ones(a.size)]))
    # Off, nothing changes.
    off = style_data(a, b, o, x[:, :1], 8)
    assert not off.position
    np.testing.assert_array_equal(off.xt, x[:, :1].T)
    # Only without battles is the constant uninformative; it is then dropped without a warning.
    none = np.array([], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = style_data(none, none, none, no_style(0), 3, position=True)
    np.testing.assert_array_equal(empty.dropped, [True])
    assert empty.n_coef == 0


@pytest.mark.parametrize("with_style", [False, True])
def test_score_and_hessian_with_the_position_column_match_finite_differences(
    with_style: bool,
) -> None:
    rng = np.random.default_rng(1)
    theta = rng.normal(0.0, 0.6, 5)
    a, b, o, sa, sb = simulate_style_battles(theta, BETA, 300, rng, position=0.4)
    x = style_features(sa, sb) if with_style else no_style(a.size)
    w = rng.uniform(0.5, 2.0, a.size)
    data = style_data(a, b, o, x, 5, w, position=True)
    assert data.n_coef == (5 if with_style else 1)
    p = rng.normal(0.0, 0.5, 5 + data.n_coef)
    prior, penalty, eps = 0.8, 0.7, 1e-6
    eye = np.eye(p.size)
    fd_grad = np.array(
        [
            (
                style_loglik(p + eps * e, data, prior, penalty)
                - style_loglik(p - eps * e, data, prior, penalty)
            )
            / (2 * eps)
            for e in eye
        ]
    )
    fd_hess = np.array(
        [
            (
                style_score(p + eps * e, data, prior, penalty)
                - style_score(p - eps * e, data, prior, penalty)
            )
            / (2 * eps)
            for e in eye
        ]
    )
    g, h = style_score(p, data, prior, penalty), style_hessian(p, data, prior, penalty)
    assert np.abs(fd_grad - g).max() < 1e-6 * np.abs(g).max()
    assert np.abs(fd_hess - h).max() < 1e-6 * np.abs(h).max()
    assert np.linalg.eigvalsh(h).max() < 0
    # The penalty acts on the position coefficient like on the others.
    assert style_loglik(p, data, prior, penalty) == pytest.approx(
        style_loglik(p, data, prior, 0.0) - 0.5 * penalty * float(p[5:] @ p[5:])
    )
