"""Battles and their sufficient statistics.

A battle is (model_a, model_b, outcome) with integer model indices and an outcome code. Every
estimator in this package only needs, for each unordered pair of models, how many battles ended in
each of the four ways, so `group_battles` reduces millions of battles to one row per pair. Grouping
is exact: fitting or resampling the rows gives the same answer as fitting or resampling the battles
(tests/ratings/test_battles.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Outcome codes, from model_a's side.
A_WINS = 0
B_WINS = 1
TIE = 2
BOTH_BAD = 3

# The `winner` strings of the public Chatbot Arena battle logs.
WINNER_CODES: dict[str, int] = {
    "model_a": A_WINS,
    "model_b": B_WINS,
    "tie": TIE,
    "tie (bothbad)": BOTH_BAD,
}

# Above this many bins, grouping sorts instead of counting into a dense n*n table.
_DENSE_LIMIT = 1 << 22


@dataclass(frozen=True)
class PairCounts:
    """Battles grouped into rows, one per unordered pair of models.

    Row k holds the battles between models `i[k]` and `j[k]`: `counts[k]` is
    (i wins, j wins, tie, both bad). Every battle in the row carries the weight `weight[k]`
    (1 unless reweighted). When battles of one pair carry different weights, the pair is split into
    one row per distinct weight, so that resampling the rows stays exact. Rows need not be sorted
    and a pair may appear in several rows; `i[k] < j[k]` is not required.
    """

    i: NDArray[np.int64]
    j: NDArray[np.int64]
    counts: NDArray[np.float64]
    n_models: int
    weight: NDArray[np.float64]

    def __post_init__(self) -> None:
        k = self.i.shape[0]
        if self.i.shape != (k,) or self.j.shape != (k,):
            raise ValueError("i and j must be 1-d arrays of the same length")
        if self.counts.shape != (k, 4):
            raise ValueError(f"counts must have shape ({k}, 4), got {self.counts.shape}")
        if self.weight.shape != (k,):
            raise ValueError(f"weight must have shape ({k},), got {self.weight.shape}")
        if self.n_models < 0:
            raise ValueError("n_models must be non-negative")
        if k:
            if (
                min(self.i.min(), self.j.min()) < 0
                or max(self.i.max(), self.j.max()) >= self.n_models
            ):
                raise ValueError(f"model indices must lie in [0, {self.n_models})")
            if np.any(self.i == self.j):
                raise ValueError("a model cannot battle itself (i == j)")
            if not np.all(np.isfinite(self.counts)) or np.any(self.counts < 0):
                raise ValueError("counts must be finite and non-negative")
            if not np.all(np.isfinite(self.weight)) or np.any(self.weight < 0):
                raise ValueError("weights must be finite and non-negative")

    @property
    def n_rows(self) -> int:
        return int(self.i.shape[0])

    @property
    def n_battles(self) -> float:
        """Number of battles (unweighted)."""
        return float(self.counts.sum())

    def battles_per_model(self) -> NDArray[np.int64]:
        """Unweighted number of battles each model took part in."""
        total = self.counts.sum(axis=1)
        per = np.bincount(self.i, total, self.n_models) + np.bincount(self.j, total, self.n_models)
        return np.rint(per).astype(np.int64)


def pair_counts(
    i: ArrayLike,
    j: ArrayLike,
    counts: ArrayLike,
    n_models: int | None = None,
    weight: ArrayLike | None = None,
) -> PairCounts:
    """Build `PairCounts` from a table of rows, e.g. the `X`/`Y` arrays of a pair-count file.

    `counts` has one row per pair: (i wins, j wins, tie, both bad). A 3-column table (no both-bad
    column) is accepted and read as (i wins, j wins, tie).
    """
    ii = np.asarray(i, dtype=np.int64).reshape(-1)
    jj = np.asarray(j, dtype=np.int64).reshape(-1)
    cc = np.asarray(counts, dtype=np.float64)
    if cc.ndim != 2 or cc.shape[1] not in (3, 4):
        raise ValueError("counts must be a (rows, 4) or (rows, 3) table")
    if cc.shape[1] == 3:
        cc = np.column_stack([cc, np.zeros(cc.shape[0])])
    if n_models is None:
        n_models = int(max(ii.max(initial=-1), jj.max(initial=-1)) + 1)
    w = np.ones(ii.shape[0]) if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    return PairCounts(ii, jj, np.ascontiguousarray(cc), int(n_models), w)


def _check_battles(
    model_a: ArrayLike, model_b: ArrayLike, outcome: ArrayLike, n_models: int | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], int]:
    a = np.asarray(model_a)
    b = np.asarray(model_b)
    o = np.asarray(outcome)
    if a.ndim != 1 or a.shape != b.shape or a.shape != o.shape:
        raise ValueError("model_a, model_b and outcome must be 1-d arrays of the same length")
    for name, arr in (("model_a", a), ("model_b", b), ("outcome", o)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    a = a.astype(np.int64, copy=False)
    b = b.astype(np.int64, copy=False)
    o = o.astype(np.int64, copy=False)
    if n_models is None:
        n_models = int(max(a.max(initial=-1), b.max(initial=-1)) + 1)
    if a.size:
        if min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_models:
            raise ValueError(f"model indices must lie in [0, {n_models})")
        if np.any(a == b):
            raise ValueError("a model cannot battle itself (model_a == model_b)")
        if o.min() < 0 or o.max() > 3:
            raise ValueError(
                "outcome codes must be 0 (a wins), 1 (b wins), 2 (tie) or 3 (both bad)"
            )
    return a, b, o, int(n_models)


def _oriented(
    a: NDArray[np.int64], b: NDArray[np.int64], o: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Put each battle in (low, high) index order, moving a win to the other side if flipped."""
    flip = a > b
    lo = np.where(flip, b, a)
    hi = np.where(flip, a, b)
    # Outcome 0 <-> 1 when flipped; ties stay. o ^ flip works because flip only matters for o in {0,
    # 1}.
    oo = np.where(o < 2, o ^ flip, o)
    return lo, hi, oo


def group_battles(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcome: ArrayLike,
    n_models: int | None = None,
    weights: ArrayLike | None = None,
) -> PairCounts:
    """Group battles into one row per unordered pair (i < j), rows sorted by (i, j).

    With `weights`, battles of one pair that carry different weights go to different rows (one per
    distinct weight), so that resampling rows is the same as resampling battles.
    """
    a, b, o, n = _check_battles(model_a, model_b, outcome, n_models)
    lo, hi, oo = _oriented(a, b, o)
    key = lo * n + hi
    if weights is None:
        if n * n * 4 <= max(_DENSE_LIMIT, 4 * key.size):
            # One counting pass over a dense (pair, outcome) table: O(battles + n^2) and no sort.
            table = np.bincount(key * 4 + oo, minlength=n * n * 4).reshape(n * n, 4)
            rows = np.flatnonzero(table.any(axis=1))
            counts = table[rows].astype(np.float64)
        else:
            rows, inverse = np.unique(key, return_inverse=True)
            counts = (
                np.bincount(inverse * 4 + oo, minlength=rows.size * 4)
                .reshape(rows.size, 4)
                .astype(np.float64)
            )
        return PairCounts(rows // n, rows % n, counts, n, np.ones(rows.size))

    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != key.shape:
        raise ValueError("weights must have one entry per battle")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    order = np.lexsort((w, key))
    ks, ws = key[order], w[order]
    new = np.ones(ks.size, dtype=bool)
    new[1:] = (ks[1:] != ks[:-1]) | (ws[1:] != ws[:-1])
    group = np.cumsum(new) - 1
    n_rows = int(group[-1] + 1) if group.size else 0
    counts = (
        np.bincount(group * 4 + oo[order], minlength=n_rows * 4)
        .reshape(n_rows, 4)
        .astype(np.float64)
    )
    first = np.flatnonzero(new)
    return PairCounts(ks[first] // n, ks[first] % n, counts, n, ws[first])


def battles_as_rows(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcome: ArrayLike,
    n_models: int | None = None,
    weights: ArrayLike | None = None,
) -> PairCounts:
    """One row per battle, in the given order and orientation (no grouping).

    This is the raw form that `group_battles` compresses; every estimator accepts either.
    """
    a, b, o, n = _check_battles(model_a, model_b, outcome, n_models)
    counts = np.zeros((a.size, 4))
    counts[np.arange(a.size), o] = 1.0
    w = np.ones(a.size) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    return PairCounts(a.copy(), b.copy(), counts, n, w)


def inverse_pair_weights(
    model_a: ArrayLike, model_b: ArrayLike, n_models: int | None = None, floor: float = 50.0
) -> NDArray[np.float64]:
    """Per-battle weight 1 / max(battles of that unordered pair, floor), scaled to mean 1.

    This is the reweighting public arena code applies since 2025 (lmarena/arena-rank,
    `min_pair_count=50`): it stops heavily sampled pairs from dominating the fit. Scaling to mean 1
    changes neither the unpenalized estimate nor its intervals; it keeps the rating prior's strength
    (counted in battles) comparable with and without reweighting.
    """
    a = np.asarray(model_a, dtype=np.int64)
    b = np.asarray(model_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("model_a and model_b must be 1-d arrays of the same length")
    if a.size == 0:
        return np.ones(0)
    n = int(max(a.max(), b.max()) + 1) if n_models is None else n_models
    key = np.minimum(a, b) * n + np.maximum(a, b)
    _, inverse, per_pair = np.unique(key, return_inverse=True, return_counts=True)
    w = 1.0 / np.maximum(per_pair[inverse].astype(np.float64), floor)
    return w / w.mean()


def reweight_pair_counts(pc: PairCounts, floor: float = 50.0) -> PairCounts:
    """`PairCounts` with each row's weight multiplied by 1 / max(pair battles, floor), scaled to
    mean 1.

    The pair total counts battles of the unordered pair over all its rows. See
    `inverse_pair_weights`.
    """
    if pc.n_rows == 0:
        return pc
    n = pc.n_models
    key = np.minimum(pc.i, pc.j) * n + np.maximum(pc.i, pc.j)
    _, inverse = np.unique(key, return_inverse=True)
    row_total = pc.counts.sum(axis=1)
    pair_total = np.bincount(inverse, row_total)[inverse]
    w = pc.weight / np.maximum(pair_total, floor)
    mean = float((w * row_total).sum() / row_total.sum())
    return PairCounts(pc.i, pc.j, pc.counts, n, w / mean)


def battle_count_matrix(pc: PairCounts) -> NDArray[np.int64]:
    """Symmetric (n, n) matrix of how many battles each pair of models fought."""
    n = pc.n_models
    total = pc.counts.sum(axis=1)
    m = np.bincount(pc.i * n + pc.j, total, n * n).reshape(n, n)
    return np.rint(m + m.T).astype(np.int64)


def win_rate_matrix(pc: PairCounts, ties: str = "half") -> NDArray[np.float64]:
    """Empirical (n, n) matrix: entry [r, c] is how often row model r beat column model c.

    `ties="half"` counts ties and both-bad as half a win each (the convention of the fit);
    `ties="exclude"` uses decisive battles only. Pairs without (decisive) battles are NaN.
    """
    if ties not in ("half", "exclude"):
        raise ValueError("ties must be 'half' or 'exclude'")
    n = pc.n_models
    c = pc.counts
    ties_n = c[:, 2] + c[:, 3]
    if ties == "half":
        score_i, score_j, total = c[:, 0] + 0.5 * ties_n, c[:, 1] + 0.5 * ties_n, c.sum(axis=1)
    else:
        score_i, score_j, total = c[:, 0], c[:, 1], c[:, 0] + c[:, 1]
    flat_ij, flat_ji = pc.i * n + pc.j, pc.j * n + pc.i
    wins = np.bincount(flat_ij, score_i, n * n) + np.bincount(flat_ji, score_j, n * n)
    games = np.bincount(flat_ij, total, n * n) + np.bincount(flat_ji, total, n * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(games > 0, wins / np.where(games > 0, games, 1.0), np.nan)
    return rate.reshape(n, n)


def model_win_rates(
    model_a: ArrayLike, model_b: ArrayLike, outcome: ArrayLike, n_models: int | None = None
) -> NDArray[np.float64]:
    """Per model, (wins + ties / 2) / battles over all its battles, a tie or both-bad counting half
    for each side; NaN for models without battles."""
    a, b, o, n = _check_battles(model_a, model_b, outcome, n_models)
    score_a = np.array([1.0, 0.0, 0.5, 0.5])[o]
    points = np.bincount(a, score_a, n) + np.bincount(b, 1.0 - score_a, n)
    games = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, points / np.maximum(games, 1), np.nan).astype(np.float64)
