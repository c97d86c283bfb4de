"""Bradley–Terry maximum likelihood on grouped pair counts, with optional tie models.

Model. Each model has a strength theta (natural log-odds units). For a battle between i and j let
d = theta_i - theta_j. Three ways of treating ties (tie and both-bad are one outcome here):

- "half" (default): ties count as half a win for each side, the convention of the public Chatbot
  Arena leaderboard. The log-likelihood of a row is s log sigma(d) + (t - s) log sigma(-d), with t
  battles and s = wins + ties / 2. With ties this is a quasi-likelihood, which is why the intervals
  use the sandwich.
- "davidson": Davidson (1970), P(i) : P(j) : P(tie) = e^{d/2} : e^{-d/2} : nu, with parameter
  eta = log nu.
- "rao-kupper": Rao & Kupper (1967), P(i) = sigma(d - tau), P(j) = sigma(-d - tau), the rest a tie.
  Parameter tau = log kappa >= 0.

Prior. Each model is credited with `prior` virtual battles, all ties, against a fixed reference
player of strength 0; its log-density is -prior * log(2 cosh(theta / 2)). This keeps a model that
never lost (or never won) finite, and makes the answer a property of the data instead of an
optimizer's stopping rule: an unbeaten model with w wins against an average field lands near
theta = log(2w / prior). With thousands of battles per model its pull is a small fraction of an
Elo point (docs/ratings.md). `prior=0` gives the plain MLE, which exists only when the win graph is
strongly connected (Ford 1957); the fit checks this.

Fitting is Newton's method with a backtracking line search on the concave penalized log-likelihood;
the Hessian is an n x n weighted graph Laplacian (plus the prior and tie-parameter terms), assembled
in O(rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import linalg
from scipy.sparse import csgraph, csr_matrix
from scipy.special import expit, log_expit

from .battles import PairCounts

Ties = Literal["half", "davidson", "rao-kupper"]
TIE_MODELS: tuple[str, ...] = ("half", "davidson", "rao-kupper")

# Score of each outcome column (i wins, j wins, tie) under ties-as-half.
_HALF_SCORE = np.array([1.0, 0.0, 0.5])


@dataclass(frozen=True)
class BTFit:
    """A fitted Bradley–Terry model.

    `theta` are strengths in natural log-odds units (Elo = 400 / ln 10 * theta + offset).
    `tie_param` is log nu (Davidson), tau (Rao–Kupper) or None (ties as half).
    """

    theta: NDArray[np.float64]
    tie_param: float | None
    ties: Ties
    prior: float
    loglik: float
    iterations: int

    @property
    def params(self) -> NDArray[np.float64]:
        """theta, then the tie parameter if any: the vector the covariance matrices refer to."""
        if self.tie_param is None:
            return self.theta.copy()
        return np.append(self.theta, self.tie_param)


def _check_ties(ties: str) -> None:
    if ties not in TIE_MODELS:
        raise ValueError(f"ties must be one of {TIE_MODELS}, got {ties!r}")


def n_extra(ties: str) -> int:
    """Number of tie parameters the model adds after the n strengths."""
    _check_ties(ties)
    return 0 if ties == "half" else 1


def three_columns(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """(i wins, j wins, tie, both bad) -> (i wins, j wins, any tie)."""
    return np.column_stack([counts[:, 0], counts[:, 1], counts[:, 2] + counts[:, 3]])


# --------------------------------------------------------------------------------------------------
# Per-outcome log-likelihood of one battle and its derivatives in (d, eta).
# Each returns arrays of shape (rows, 3), one column per outcome (i wins, j wins, tie).


@dataclass
class _Derivs:
    logp: NDArray[np.float64]
    dd: NDArray[np.float64]
    de: NDArray[np.float64] | None
    ddd: NDArray[np.float64]
    dde: NDArray[np.float64] | None
    dee: NDArray[np.float64] | None


def _derivs(ties: str, d: NDArray[np.float64], eta: float) -> _Derivs:
    if ties == "half":
        p = expit(d)[:, None]
        lp, lq = log_expit(d)[:, None], log_expit(-d)[:, None]
        y = _HALF_SCORE[None, :]
        logp = y * lp + (1.0 - y) * lq
        dd = y - p
        ddd = np.broadcast_to(-p * (1.0 - p), dd.shape)
        return _Derivs(logp, dd, None, ddd, None, None)
    if ties == "davidson":
        return _davidson(d, eta)
    return _rao_kupper(d, eta)


def _davidson(d: NDArray[np.float64], eta: float) -> _Derivs:
    # Exponential-family form: log P(o) = a_o d + b_o eta - log Z with a = (1/2, -1/2, 0), b = (0,
    # 0, 1). Gradients are a_o - E[a], b_o - E[b]; the Hessian is minus the covariance of (a, b).
    h = 0.5 * d
    m = np.maximum(np.maximum(h, -h), eta)
    ei, ej, et = np.exp(h - m), np.exp(-h - m), np.exp(eta - m)
    z = ei + ej + et
    pi, pj, pt = ei / z, ej / z, et / z
    log_z = m + np.log(z)
    a = np.array([0.5, -0.5, 0.0])[None, :]
    b = np.array([0.0, 0.0, 1.0])[None, :]
    logp = a * d[:, None] + b * eta - log_z[:, None]
    ea = 0.5 * (pi - pj)
    dd = a - ea[:, None]
    de = b - pt[:, None]
    var_a = 0.25 * (pi + pj) - ea**2
    cov_ab = -ea * pt
    var_b = pt * (1.0 - pt)
    shape = dd.shape
    return _Derivs(
        logp,
        dd,
        de,
        np.broadcast_to(-var_a[:, None], shape),
        np.broadcast_to(-cov_ab[:, None], shape),
        np.broadcast_to(-var_b[:, None], shape),
    )


def _log_cosh(x: NDArray[np.float64]) -> NDArray[np.float64]:
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax)) - np.log(2.0)


def _rao_kupper(d: NDArray[np.float64], tau: float) -> _Derivs:
    # Cumulative-logit form with cut points -tau, +tau (concave in (d, tau)).
    # P(tie) = sigma(d + tau) - sigma(d - tau) = sinh(tau) / (cosh(d) + cosh(tau)), computed in
    # logs.
    lo, hi = d - tau, d + tau
    s_lo, s_hi = expit(lo), expit(hi)
    f_lo, f_hi = s_lo * (1.0 - s_lo), s_hi * (1.0 - s_hi)
    g_lo, g_hi = f_lo * (1.0 - 2.0 * s_lo), f_hi * (1.0 - 2.0 * s_hi)
    if tau > 0:
        log_sinh = tau + np.log1p(-np.exp(-2.0 * tau)) - np.log(2.0)
        log_tie = log_sinh - np.logaddexp(_log_cosh(d), _log_cosh(np.full_like(d, tau)))
    else:
        log_tie = np.full_like(d, -np.inf)
    tie = np.exp(log_tie)
    k = d.shape[0]
    logp = np.empty((k, 3))
    logp[:, 0] = log_expit(lo)
    logp[:, 1] = log_expit(-hi)
    logp[:, 2] = log_tie
    dd, de = np.empty((k, 3)), np.empty((k, 3))
    ddd, dde, dee = np.empty((k, 3)), np.empty((k, 3)), np.empty((k, 3))
    # i wins: log sigma(d - tau)
    dd[:, 0], de[:, 0] = 1.0 - s_lo, -(1.0 - s_lo)
    ddd[:, 0], dde[:, 0], dee[:, 0] = -f_lo, f_lo, -f_lo
    # j wins: log sigma(-d - tau) = log(1 - sigma(d + tau))
    dd[:, 1], de[:, 1] = -s_hi, -s_hi
    ddd[:, 1], dde[:, 1], dee[:, 1] = -f_hi, -f_hi, -f_hi
    # tie: log(sigma(d + tau) - sigma(d - tau))
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = (f_hi - f_lo) / tie, (f_hi + f_lo) / tie
        dd[:, 2], de[:, 2] = u, v
        ddd[:, 2] = (g_hi - g_lo) / tie - u * u
        dde[:, 2] = (g_hi + g_lo) / tie - u * v
        dee[:, 2] = (g_hi - g_lo) / tie - v * v
    return _Derivs(logp, dd, de, ddd, dde, dee)


# --------------------------------------------------------------------------------------------------
# Assembly from rows to the full parameter vector.


def laplacian(
    i: NDArray[np.int64], j: NDArray[np.int64], w: NDArray[np.float64], n: int
) -> NDArray:
    """Weighted graph Laplacian sum_k w_k (e_i - e_j)(e_i - e_j)^T as a dense (n, n) array."""
    # (np.bincount returns integers for empty input; the cast keeps the dtype float.)
    m = np.bincount(i * n + j, w, n * n).astype(np.float64).reshape(n, n)
    m = m + m.T
    out = -m
    out[np.diag_indices(n)] += m.sum(axis=1)
    return out


def _scatter(i: NDArray[np.int64], j: NDArray[np.int64], v: NDArray[np.float64], n: int) -> NDArray:
    """sum_k v_k (e_i - e_j)."""
    return (np.bincount(i, v, n) - np.bincount(j, v, n)).astype(np.float64)


def _prior_terms(theta: NDArray[np.float64], prior: float) -> tuple[float, NDArray, NDArray]:
    """Log-prior, its gradient and its (negative) curvature, per model."""
    if prior == 0:
        z = np.zeros_like(theta)
        return 0.0, z, z
    p = expit(theta)
    value = -prior * float(np.sum(np.logaddexp(0.5 * theta, -0.5 * theta)))
    return value, prior * (0.5 - p), prior * p * (1.0 - p)


def _split(params: NDArray[np.float64], n: int, ties: str) -> tuple[NDArray[np.float64], float]:
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (n + n_extra(ties),):
        raise ValueError(f"params must have length {n + n_extra(ties)} for ties={ties!r}")
    return params[:n], (float(params[n]) if ties != "half" else 0.0)


def _weighted_counts(pc: PairCounts) -> NDArray[np.float64]:
    return three_columns(pc.counts) * pc.weight[:, None]


def bt_loglik(params: NDArray, pc: PairCounts, ties: Ties = "half", prior: float = 1.0) -> float:
    """Penalized log-likelihood (log-likelihood plus log-prior) at `params` = (theta[, tie
    parameter])."""
    theta, eta = _split(params, pc.n_models, ties)
    c = _weighted_counts(pc)
    der = _derivs(ties, theta[pc.i] - theta[pc.j], eta)
    with np.errstate(invalid="ignore"):
        ll = float(np.sum(np.where(c > 0, c * der.logp, 0.0)))
    return ll + _prior_terms(theta, prior)[0]


def bt_score(params: NDArray, pc: PairCounts, ties: Ties = "half", prior: float = 1.0) -> NDArray:
    """Gradient of `bt_loglik` with respect to `params`."""
    theta, eta = _split(params, pc.n_models, ties)
    c = _weighted_counts(pc)
    der = _derivs(ties, theta[pc.i] - theta[pc.j], eta)
    n = pc.n_models
    g = _scatter(pc.i, pc.j, np.sum(c * der.dd, axis=1), n) + _prior_terms(theta, prior)[1]
    if der.de is None:
        return g
    return np.append(g, np.sum(c * der.de))


def bt_hessian(params: NDArray, pc: PairCounts, ties: Ties = "half", prior: float = 1.0) -> NDArray:
    """Hessian of `bt_loglik` (negative semi-definite)."""
    return -_information(params, pc, ties, prior)


def _information(params: NDArray, pc: PairCounts, ties: str, prior: float) -> NDArray:
    """Minus the Hessian of the penalized log-likelihood (the observed information)."""
    theta, eta = _split(params, pc.n_models, ties)
    c = _weighted_counts(pc)
    der = _derivs(ties, theta[pc.i] - theta[pc.j], eta)
    n = pc.n_models
    h = laplacian(pc.i, pc.j, -np.sum(c * der.ddd, axis=1), n)
    h[np.diag_indices(n)] += _prior_terms(theta, prior)[2]
    if der.dde is None or der.dee is None:
        return h
    out = np.empty((n + 1, n + 1))
    out[:n, :n] = h
    cross = -_scatter(pc.i, pc.j, np.sum(c * der.dde, axis=1), n)
    out[:n, n] = cross
    out[n, :n] = cross
    out[n, n] = -np.sum(c * der.dee)
    return out


def score_covariance(params: NDArray, pc: PairCounts, ties: Ties = "half") -> NDArray:
    """Sum over battles of the outer product of each battle's score: the "meat" G of the sandwich.

    A battle in row k with outcome o contributes weight_k^2 * s s^T, where s is the gradient of its
    log-likelihood; grouping makes this a sum over (row, outcome) with the battle counts as
    multiplicity.
    """
    theta, eta = _split(params, pc.n_models, ties)
    c = three_columns(pc.counts)
    w2 = pc.weight**2
    der = _derivs(ties, theta[pc.i] - theta[pc.j], eta)
    n = pc.n_models
    g = laplacian(pc.i, pc.j, w2 * np.sum(c * der.dd**2, axis=1), n)
    if der.de is None:
        return g
    out = np.empty((n + 1, n + 1))
    out[:n, :n] = g
    cross = _scatter(pc.i, pc.j, w2 * np.sum(c * der.dd * der.de, axis=1), n)
    out[:n, n] = cross
    out[n, :n] = cross
    out[n, n] = np.sum(w2[:, None] * c * der.de**2)
    return out


# --------------------------------------------------------------------------------------------------
# Fitting.


def _check_mle_exists(pc: PairCounts, ties: str) -> None:
    """Without a prior the MLE exists only if every model can be reached from every other through
    wins (Ford 1957), ties counting both ways under "half"."""
    n = pc.n_models
    c = three_columns(pc.counts) * (pc.weight[:, None] > 0)
    played = np.bincount(pc.i, c.sum(axis=1), n) + np.bincount(pc.j, c.sum(axis=1), n)
    if np.any(played == 0):
        raise ValueError("prior=0 needs every model to have battles; give a prior > 0")
    beats = c[:, 0] > 0
    loses = c[:, 1] > 0
    if ties == "half":
        beats = beats | (c[:, 2] > 0)
        loses = loses | (c[:, 2] > 0)
    rows = np.concatenate([pc.i[beats], pc.j[loses]])
    cols = np.concatenate([pc.j[beats], pc.i[loses]])
    graph = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    k, _ = csgraph.connected_components(graph, directed=True, connection="strong")
    if k > 1:
        raise ValueError(
            "the MLE does not exist without a prior: some models never lost (or never won) against "
            "the rest (the win graph is not strongly connected); give a prior > 0"
        )


def newton_step(h: NDArray[np.float64], g: NDArray[np.float64], n: int, prior: float) -> NDArray:
    """Solve h x = g for the Newton step; h is positive definite when prior > 0.

    Without a prior, h is singular along the all-ones direction of the strengths (only differences
    are identified). The gradient is orthogonal to it, so adding the rank-one term 1 1^T / n makes h
    definite and leaves the step unchanged except for that direction, which it sets to zero.
    """
    if prior == 0:
        h = h.copy()
        h[:n, :n] += 1.0 / n
    try:
        # Cholesky, not a general solve: LAPACK's LU and inverse routines hand small matrices to
        # multithreaded BLAS, which is slower by 10-100x when another process holds a core.
        return linalg.cho_solve(linalg.cho_factor(h), g)
    except linalg.LinAlgError:
        return np.linalg.lstsq(h, g, rcond=None)[0]


def newton_maximize(
    objective: Callable[[NDArray[np.float64]], float],
    score: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    information: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    params: NDArray[np.float64],
    n: int,
    prior: float,
    tol: float,
    max_iter: int,
) -> tuple[NDArray[np.float64], float, int]:
    """Maximize a concave objective by Newton's method with a backtracking (Armijo) line search.

    Stops once the largest step is below `tol`. The line search is skipped when the predicted gain
    g . step is below the objective's rounding error: there the quadratic model is exact to machine
    precision, and comparing two objective values that differ by rounding only would make the search
    halve the step for nothing.
    """
    f = objective(params)
    for it in range(1, max_iter + 1):
        g = score(params)
        step = newton_step(information(params), g, n, prior)
        slope = float(g @ step)
        t = 1.0
        if slope > 1e-12 * max(1.0, abs(f)):
            while True:
                f_trial = objective(params + t * step)
                if f_trial >= f + 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            params, f = params + t * step, f_trial
        else:
            params = params + step
            f = objective(params)
        if not np.isfinite(f):
            raise FloatingPointError("Newton iteration left the domain of the objective")
        if prior == 0:
            params[:n] -= params[:n].mean()
        if np.max(np.abs(t * step), initial=0.0) < tol:
            return params, f, it
    raise RuntimeError(f"Newton iteration did not converge in {max_iter} steps")


def bt_pairwise(
    pc: PairCounts,
    ties: Ties = "half",
    prior: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 200,
    init: NDArray[np.float64] | None = None,
) -> BTFit:
    """Maximum (penalized) likelihood Bradley–Terry fit on grouped counts.

    Converges when the largest Newton step is below `tol` (natural units; 1e-10 is ~2e-8 Elo).
    `init` is an optional starting `params` vector (theta[, tie parameter]).
    """
    _check_ties(ties)
    if prior < 0:
        raise ValueError("prior must be non-negative")
    n = pc.n_models
    if ties != "half":
        c = _weighted_counts(pc)
        if c[:, 2].sum() == 0 or c[:, :2].sum() == 0:
            raise ValueError(f"ties={ties!r} needs both ties and decisive results in the data")
    if prior == 0:
        _check_mle_exists(pc, ties)
    if init is not None:
        params = np.array(init, dtype=np.float64)
    else:
        params = np.zeros(n + n_extra(ties))
        if ties == "rao-kupper":
            params[n] = 0.5  # tau must start inside tau > 0
    if params.shape != (n + n_extra(ties),):
        raise ValueError("init has the wrong length")

    def objective(p: NDArray) -> float:
        if ties == "rao-kupper" and p[n] <= 0:
            return -np.inf
        return bt_loglik(p, pc, ties, prior)

    params, f, iterations = newton_maximize(
        objective,
        lambda p: bt_score(p, pc, ties, prior),
        lambda p: _information(p, pc, ties, prior),
        params,
        n,
        prior,
        tol,
        max_iter,
    )
    theta = params[:n].copy()
    tie_param = float(params[n]) if ties != "half" else None
    return BTFit(theta, tie_param, ties, prior, f, iterations)
