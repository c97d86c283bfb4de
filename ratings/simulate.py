"""Simulated battles with known strengths, for tests, coverage studies and benchmarks."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from .battles import A_WINS, B_WINS, BOTH_BAD, TIE

TieProcess = Literal["score", "constant", "davidson"]


def random_pairs(
    n_models: int, n_battles: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Uniformly random ordered pairs of distinct models."""
    if n_models < 2:
        raise ValueError("need at least two models")
    a = rng.integers(0, n_models, size=n_battles)
    b = rng.integers(0, n_models - 1, size=n_battles)
    b = b + (b >= a)
    return a, b


def outcome_probabilities(
    z: NDArray[np.float64], tie_rate: float, ties: TieProcess = "score"
) -> NDArray[np.float64]:
    """(battles, 3) probabilities of (a wins, b wins, tie) given the log-odds z of a over b.

    - "score": P(tie) = 4 tie_rate sigma(z) sigma(-z), taken half from each side, so the expected
      score of a (a tie counting 0.5) is exactly sigma(z): ties-as-half Bradley–Terry is correct in
      mean.
    - "constant": a tie with probability tie_rate whatever z; otherwise a wins with sigma(z).
    - "davidson": Davidson (1970) with nu = 2 tie_rate / (1 - tie_rate) (tie_rate ties at z = 0).
    """
    if not 0 <= tie_rate < 1:
        raise ValueError("tie_rate must lie in [0, 1)")
    p = expit(z)
    if ties == "score":
        if tie_rate > 0.5:
            raise ValueError("ties='score' needs tie_rate <= 0.5")
        tie = 4.0 * tie_rate * p * (1.0 - p)
        return np.column_stack([p - tie / 2, 1.0 - p - tie / 2, tie])
    if ties == "constant":
        return np.column_stack(
            [(1 - tie_rate) * p, (1 - tie_rate) * (1 - p), np.full_like(p, tie_rate)]
        )
    if ties == "davidson":
        nu = 2.0 * tie_rate / (1.0 - tie_rate)
        ea, eb = np.exp(0.5 * z), np.exp(-0.5 * z)
        total = ea + eb + nu
        return np.column_stack([ea / total, eb / total, nu / total])
    raise ValueError(f"unknown tie process {ties!r}")


def simulate_battles(
    theta: ArrayLike,
    n_battles: int,
    rng: np.random.Generator,
    tie_rate: float = 0.2,
    ties: TieProcess = "score",
    both_bad_share: float = 0.5,
    model_a: ArrayLike | None = None,
    model_b: ArrayLike | None = None,
    position: float = 0.0,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Battles between random pairs (or the given pairs) of models with strengths `theta`.

    `position` is a side bias: the log-odds of model_a (the left side) beating model_b are
    theta_a - theta_b + position. Returns (model_a, model_b, outcome codes); a `both_bad_share` of
    the ties are coded both-bad.
    """
    th = np.asarray(theta, dtype=np.float64)
    if model_a is None or model_b is None:
        a, b = random_pairs(th.size, n_battles, rng)
    else:
        a, b = np.asarray(model_a, dtype=np.int64), np.asarray(model_b, dtype=np.int64)
    probs = outcome_probabilities(th[a] - th[b] + position, tie_rate, ties)
    return a, b, _draw_outcomes(probs, both_bad_share, rng)


def _draw_outcomes(
    probs: NDArray[np.float64], both_bad_share: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    u = rng.random(probs.shape[0])
    outcome = np.where(
        u < probs[:, 0], A_WINS, np.where(u < probs[:, 0] + probs[:, 1], B_WINS, TIE)
    )
    bad = (outcome == TIE) & (rng.random(probs.shape[0]) < both_bad_share)
    outcome[bad] = BOTH_BAD
    return outcome.astype(np.int64)


def simulate_style_battles(
    theta: ArrayLike,
    beta: ArrayLike,
    n_battles: int,
    rng: np.random.Generator,
    tie_rate: float = 0.2,
    style_spread: float = 0.5,
    ties: TieProcess = "score",
    position: float = 0.0,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray, NDArray]:
    """Battles whose outcome also depends on answer style; style is confounded with the model.

    Each model has its own typical style, so a naive fit credits style to the model. The four
    per-side counts are (length, headers, list items, bold); the true log-odds are theta_a - theta_b
    + x . beta + position with x = (a - b) / (a + b + 1) per element (before z-scoring) and
    `position` a bias towards model_a's side. Ties as in `simulate_battles` "score". Returns
    (model_a, model_b, outcome, style_a, style_b).
    """
    th = np.asarray(theta, dtype=np.float64)
    bt = np.asarray(beta, dtype=np.float64)
    if bt.shape != (4,):
        raise ValueError("beta needs one entry per style element (4)")
    n = th.size
    a, b = random_pairs(n, n_battles, rng)
    # Per-model style habits: log length and log rates of markdown elements.
    habit = rng.normal(0.0, style_spread, size=(n, 4)) + np.log([400.0, 2.0, 5.0, 3.0])

    def answer(model: NDArray[np.int64]) -> NDArray[np.float64]:
        lam = np.exp(habit[model] + rng.normal(0.0, 0.3, size=(model.size, 4)))
        return rng.poisson(lam).astype(np.float64)

    sa, sb = answer(a), answer(b)
    x = (sa - sb) / (sa + sb + 1.0)
    probs = outcome_probabilities(th[a] - th[b] + x @ bt + position, tie_rate, ties)
    return a, b, _draw_outcomes(probs, 0.5, rng), sa, sb
