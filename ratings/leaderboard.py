"""From battles to a leaderboard: Elo-scale ratings, 95% intervals, rank bounds.

The web service's ratings job calls `rate_arena` (battles plus one `RatingOptions` value);
`rate_battles` takes the options one by one, and `rate_pairs` does the same for votes already
grouped into pair counts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csgraph, csr_matrix
from scipy.special import ndtri

from .battles import (
    PairCounts,
    _check_battles,
    group_battles,
    inverse_pair_weights,
    reweight_pair_counts,
)
from .bt import BTFit, Ties, bt_pairwise, n_extra
from .options import CI_METHODS, RatingOptions
from .style import StyleFit, bootstrap_style, bt_style, sandwich_style, style_data, style_features
from .uncertainty import bootstrap_pairwise, sandwich_pairwise

# Elo points per natural log-odds unit: base 10, scale 400.
ELO_PER_UNIT = 400.0 / math.log(10.0)
DEFAULT_OPTIONS = RatingOptions()


def elo_weights(n: int, anchor: int | None, rated: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Weights w with rating_i = ELO_PER_UNIT * (theta_i - w . theta) + offset.

    w is the anchor's indicator, or uniform over the rated models when ratings are centred on their
    mean.
    """
    w = np.zeros(n)
    if anchor is not None:
        w[anchor] = 1.0
    elif rated.any():
        w[rated] = 1.0 / rated.sum()
    return w


def to_elo(
    theta: NDArray[np.float64],
    anchor: tuple[int, float] | None = None,
    center: float = 1000.0,
    rated: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """Elo-scale ratings 400 / ln 10 * theta + offset, for one theta vector or a (rounds, n) stack.

    With `anchor=(index, rating)` that model gets exactly `rating`; otherwise the mean over `rated`
    models (default: all) is `center`.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.shape[-1]
    rated = np.ones(n, dtype=bool) if rated is None else rated
    w = elo_weights(n, None if anchor is None else anchor[0], rated)
    offset = center if anchor is None else anchor[1]
    ref = theta @ w
    return ELO_PER_UNIT * (theta - np.asarray(ref)[..., None]) + offset


def normal_intervals(
    rating: NDArray[np.float64], variance: NDArray[np.float64], level: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """rating -/+ z * sd, with z the normal quantile for a two-sided `level` interval (1.96 for
    95%)."""
    z = float(ndtri(0.5 + level / 2.0))
    half = z * np.sqrt(np.maximum(variance, 0.0))
    return rating - half, rating + half


def percentile_intervals(
    samples: NDArray[np.float64], level: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Percentile bootstrap interval per column of (rounds, n) `samples` (linear interpolation)."""
    q = np.quantile(samples, [0.5 - level / 2.0, 0.5 + level / 2.0], axis=0)
    return q[0], q[1]


def rank_upper_bound(lower: NDArray[np.float64], upper: NDArray[np.float64]) -> NDArray[np.int64]:
    """1 + the number of models whose lower bound is above this model's upper bound.

    Models whose bounds are NaN (no battles) get 0, meaning unranked, and do not count for the
    others.
    """
    lo = np.sort(lower[np.isfinite(lower)])
    up = np.asarray(upper, dtype=np.float64)
    above = lo.size - np.searchsorted(lo, np.where(np.isfinite(up), up, 0.0), side="right")
    return np.where(np.isfinite(up), 1 + above, 0).astype(np.int64)


def rank_lower_bound(lower: NDArray[np.float64], upper: NDArray[np.float64]) -> NDArray[np.int64]:
    """1 + the number of other models whose upper bound is at or above this model's lower bound.

    The worst rank the intervals allow; with `rank_upper_bound`, [rank_ub, rank_lb] is the rank
    spread (rank_ub <= rank_lb). Equal bounds count as possibly better. Models whose bounds are NaN
    (no battles) get 0, meaning unranked, and do not count for the others.
    """
    lo = np.asarray(lower, dtype=np.float64)
    up = np.asarray(upper, dtype=np.float64)
    rated = np.isfinite(lo) & np.isfinite(up)
    ups = np.sort(up[rated])
    key = np.where(rated, lo, 0.0)
    at_or_above = ups.size - np.searchsorted(ups, key, side="left")
    # The model's own upper bound is at or above its lower bound whenever lower <= upper.
    others = at_or_above - (up >= key)
    return np.where(rated, 1 + others, 0).astype(np.int64)


def predicted_win_rate_matrix(rating: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, n) matrix of P(row model beats column model) = 1 / (1 + 10^((r_col - r_row) / 400))."""
    r = np.asarray(rating, dtype=np.float64)
    return 1.0 / (1.0 + np.power(10.0, (r[None, :] - r[:, None]) / 400.0))


def _no_ranks() -> NDArray[np.int64]:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Leaderboard:
    """Ratings of n models (index order), with intervals at `level` and rank bounds.

    Models without battles have NaN rating and bounds and rank_ub = rank_lb = 0. `rank_ub` and
    `rank_lb` are the best and worst ranks the intervals allow (`rank_upper_bound`,
    `rank_lower_bound`); `rank_lb` is computed from the bounds when not given.
    `covariance` is the Elo-scale covariance of the ratings (sandwich) and `samples` the Elo-scale
    bootstrap ratings (rounds, n); only the one matching `ci` is set. For style control, `coef`
    holds the style coefficients (log-odds per standard deviation of each covariate) with their
    interval. With the position term, `position_coef` is gamma (natural log-odds gained by the
    model_a side) with its interval; None without the term, NaN when it was left out (no battles,
    or sides confounded with the models: see `ratings.style.sides_confounded`).
    """

    rating: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    rank_ub: NDArray[np.int64]
    battles: NDArray[np.int64]
    ci: str
    level: float
    fit: BTFit | StyleFit
    covariance: NDArray[np.float64] | None = None
    samples: NDArray[np.float64] | None = None
    coef: NDArray[np.float64] | None = None
    coef_lower: NDArray[np.float64] | None = None
    coef_upper: NDArray[np.float64] | None = None
    rank_lb: NDArray[np.int64] = field(default_factory=_no_ranks)
    position_coef: float | None = None
    position_lower: float | None = None
    position_upper: float | None = None

    def __post_init__(self) -> None:
        if self.rank_lb.shape != self.rating.shape:
            if self.rank_lb.size:
                raise ValueError("rank_lb must have one entry per model")
            object.__setattr__(self, "rank_lb", rank_lower_bound(self.lower, self.upper))

    def order(self) -> NDArray[np.int64]:
        """Model indices from the highest rating down (unrated models last)."""
        key = np.where(np.isfinite(self.rating), -self.rating, np.inf)
        return np.argsort(key, kind="stable")


def _check_options(ci: str, rng: np.random.Generator | None, level: float, rounds: int) -> None:
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    if ci == "bootstrap":
        if rng is None:
            raise ValueError("ci='bootstrap' needs an explicit rng (np.random.Generator)")
        if rounds < 2:
            raise ValueError("the bootstrap needs at least 2 rounds")
    if not 0 < level < 1:
        raise ValueError("level must lie strictly between 0 and 1")


def _check_anchor(anchor: tuple[int, float] | None, battles: NDArray[np.int64]) -> None:
    if anchor is None:
        return
    idx, rating = anchor
    if not 0 <= idx < battles.size:
        raise ValueError(f"anchor model index {idx} is not in [0, {battles.size})")
    if battles[idx] == 0:
        raise ValueError(f"anchor model {idx} has no battles")
    if not math.isfinite(rating):
        raise ValueError("anchor rating must be finite")


def _warn_if_disconnected(
    i: NDArray[np.int64], j: NDArray[np.int64], rated: NDArray[np.bool_]
) -> None:
    n = rated.size
    graph = csr_matrix((np.ones(i.size), (i, j)), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    if np.unique(labels[rated]).size > 1:
        warnings.warn(
            "the models fall into groups that never played each other; ratings across groups are "
            "set only by the prior and their intervals do not cover that gap",
            stacklevel=3,
        )


def _finish(
    theta: NDArray[np.float64],
    cov_theta: NDArray[np.float64] | None,
    samples_theta: NDArray[np.float64] | None,
    battles: NDArray[np.int64],
    anchor: tuple[int, float] | None,
    center: float,
    ci: str,
    level: float,
    fit: BTFit | StyleFit,
) -> Leaderboard:
    n = theta.size
    rated = battles > 0
    rating = to_elo(theta, anchor, center, rated)
    covariance = samples = None
    if cov_theta is not None:
        w = elo_weights(n, None if anchor is None else anchor[0], rated)
        # rating_i - offset = ELO * (theta_i - w . theta): covariance of (I - 1 w^T) theta, expanded
        # to V - v 1^T - 1 v^T + (w^T V w) 1 1^T with v = V w (no n^3 products).
        v = cov_theta @ w
        covariance = ELO_PER_UNIT**2 * (cov_theta - v[:, None] - v[None, :] + float(w @ v))
        lower, upper = normal_intervals(rating, np.diag(covariance).copy(), level)
    else:
        assert samples_theta is not None
        samples = to_elo(samples_theta, anchor, center, rated)
        lower, upper = percentile_intervals(samples, level)
    for arr in (rating, lower, upper):
        arr[~rated] = np.nan
    return Leaderboard(
        rating=rating,
        lower=lower,
        upper=upper,
        rank_ub=rank_upper_bound(lower, upper),
        battles=battles,
        ci=ci,
        level=level,
        fit=fit,
        covariance=covariance,
        samples=samples,
        rank_lb=rank_lower_bound(lower, upper),
    )


def rate_pairs(
    pc: PairCounts,
    *,
    anchor: tuple[int, float] | None = None,
    center: float = 1000.0,
    ci: str = "sandwich",
    rounds: int = 1000,
    rng: np.random.Generator | None = None,
    ties: Ties = "half",
    prior: float = 1.0,
    reweight: bool = False,
    level: float = 0.95,
    workers: int | None = None,
) -> Leaderboard:
    """Bradley–Terry leaderboard from grouped pair counts.

    `anchor=(model index, rating)` pins one model; otherwise ratings average `center`. `ci` is
    "sandwich" (default) or "bootstrap" (`rounds` rounds drawn with `rng`, on `workers` threads).
    `reweight` weights each battle by 1 / max(pair battles, 50).
    """
    _check_options(ci, rng, level, rounds)
    battles = pc.battles_per_model()
    _check_anchor(anchor, battles)
    if reweight:
        pc = reweight_pair_counts(pc)
    _warn_if_disconnected(pc.i, pc.j, battles > 0)
    n = pc.n_models
    if ties != "half" and not battles.any():
        # No battles: nothing to rate, and a tie parameter without data has no estimate at all.
        n_extra(ties)  # still rejects an unknown tie model
        if prior < 0:
            raise ValueError("prior must be non-negative")
        empty = BTFit(np.zeros(n), math.nan, ties, prior, 0.0, 0)
        if ci == "sandwich":
            return _finish(
                empty.theta, np.zeros((n, n)), None, battles, anchor, center, ci, level, empty
            )
        return _finish(
            empty.theta, None, np.zeros((rounds, n)), battles, anchor, center, ci, level, empty
        )
    fit = bt_pairwise(pc, ties=ties, prior=prior)
    if ci == "sandwich":
        cov = sandwich_pairwise(pc, fit)[:n, :n]
        return _finish(fit.theta, cov, None, battles, anchor, center, ci, level, fit)
    assert rng is not None
    boot = bootstrap_pairwise(pc, rounds, rng, ties=ties, prior=prior, fit=fit, workers=workers)
    return _finish(fit.theta, None, boot[:, :n], battles, anchor, center, ci, level, fit)


def rate_battles(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcome: ArrayLike,
    n_models: int | None = None,
    *,
    weights: ArrayLike | None = None,
    style_a: ArrayLike | None = None,
    style_b: ArrayLike | None = None,
    anchor: tuple[int, float] | None = None,
    center: float = 1000.0,
    ci: str = "sandwich",
    rounds: int = 1000,
    rng: np.random.Generator | None = None,
    ties: Ties = "half",
    prior: float = 1.0,
    penalty: float = 0.5,
    reweight: bool = False,
    level: float = 0.95,
    workers: int | None = None,
    position: bool = False,
) -> Leaderboard:
    """Leaderboard from battles given as arrays.

    `model_a`, `model_b`: model indices in [0, n_models); `outcome`: 0 a wins, 1 b wins, 2 tie,
    3 both bad (see `ratings.battles`). `weights`: optional per-battle weights. With `style_a` and
    `style_b` ((battles, elements) per-side style counts) the fit is style-controlled (ties as half
    only), with covariates from `style_features` and L2 `penalty` on their coefficients. With
    `position`, the log-odds also get a constant term gamma for the model_a side (same penalty; ties
    as half only), with or without style. Other options as in `rate_pairs`.
    """
    _check_options(ci, rng, level, rounds)
    a, b, o, n = _check_battles(model_a, model_b, outcome, n_models)
    if reweight:
        rw = inverse_pair_weights(a, b, n)
        weights = rw if weights is None else rw * np.asarray(weights, dtype=np.float64)
    if style_a is None and style_b is None and not position:
        pc = group_battles(a, b, o, n, weights)
        return rate_pairs(
            pc,
            anchor=anchor,
            center=center,
            ci=ci,
            rounds=rounds,
            rng=rng,
            ties=ties,
            prior=prior,
            level=level,
            workers=workers,
        )
    style = style_a is not None or style_b is not None
    if style and (style_a is None or style_b is None):
        raise ValueError("style control needs both style_a and style_b")
    if ties != "half":
        what = "style control" if style else "the position term"
        raise ValueError(f"{what} supports ties='half' only")
    if prior <= 0:
        raise ValueError("style control and the position term need prior > 0")
    battles = (np.bincount(a, minlength=n) + np.bincount(b, minlength=n)).astype(np.int64)
    _check_anchor(anchor, battles)
    _warn_if_disconnected(a, b, battles > 0)
    if style_a is not None and style_b is not None:
        features = style_features(style_a, style_b)
    else:
        features = np.zeros((a.size, 0))
    # Without covariates the design depends only on the ordered pair: group the battles (exact).
    data = style_data(a, b, o, features, n, weights, position=position, group=not style)
    fit = bt_style(data, prior=prior, penalty=penalty)
    kept = ~fit.dropped
    coef_lower = np.zeros(kept.size)
    coef_upper = np.zeros(kept.size)
    if ci == "sandwich":
        cov = sandwich_style(data, fit)
        lo, up = normal_intervals(fit.coef[kept], np.diag(cov)[n:], level)
        board = _finish(fit.theta, cov[:n, :n], None, battles, anchor, center, ci, level, fit)
    else:
        assert rng is not None
        boot = bootstrap_style(data, rounds, rng, fit=fit, workers=workers)
        lo, up = percentile_intervals(boot[:, n:], level)
        board = _finish(fit.theta, None, boot[:, :n], battles, anchor, center, ci, level, fit)
    coef_lower[kept], coef_upper[kept] = lo, up
    n_style = kept.size - int(position)
    gamma = gamma_lower = gamma_upper = None
    if position:
        gamma = fit.position_coef
        fitted = bool(kept[-1])
        gamma_lower = float(coef_lower[-1]) if fitted else math.nan
        gamma_upper = float(coef_upper[-1]) if fitted else math.nan
    return replace(
        board,
        coef=fit.coef[:n_style].copy() if style else None,
        coef_lower=coef_lower[:n_style] if style else None,
        coef_upper=coef_upper[:n_style] if style else None,
        position_coef=gamma,
        position_lower=gamma_lower,
        position_upper=gamma_upper,
    )


def rate_arena(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcome: ArrayLike,
    n_models: int,
    *,
    options: RatingOptions = DEFAULT_OPTIONS,
    style_a: ArrayLike | None = None,
    style_b: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    rng: np.random.Generator | None = None,
) -> Leaderboard:
    """The leaderboard of one snapshot: battles plus a `RatingOptions` value.

    Arrays as in `rate_battles`. With style counts the fit is style-controlled, plus the position
    term if `options.position`; without them and with `options.position`, the position term alone
    (the style fit with only the constant column); with neither, the grouped Bradley–Terry fit of
    `rate_pairs`. Ratings are centred on `options.center`. `ci="bootstrap"` needs `rng`, which the
    caller builds as `np.random.default_rng(options.seed)` so that a snapshot can be recomputed.
    No battles give an unrated board; models without battles are unrated (NaN).
    """
    if not isinstance(options, RatingOptions):
        raise TypeError(f"options must be a RatingOptions, got {type(options).__name__}")
    if options.ci == "bootstrap" and rng is None:
        raise ValueError(
            "ci='bootstrap' needs an explicit rng: np.random.default_rng(options.seed)"
        )
    return rate_battles(
        model_a,
        model_b,
        outcome,
        n_models,
        weights=weights,
        style_a=style_a,
        style_b=style_b,
        center=options.center,
        ci=options.ci,
        rounds=options.rounds,
        rng=rng,
        ties=cast(Ties, options.ties),  # validated by RatingOptions
        prior=options.prior,
        penalty=options.penalty,
        reweight=options.reweight,
        level=options.level,
        position=options.position,
    )
