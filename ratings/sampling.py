"""Exact resampling of counts: multinomial draws through tabulated Poisson inversion.

The bootstrap resamples the same table of counts a thousand times. `rng.multinomial` spends one
binomial draw per cell (about 120 ns) and `rng.poisson` about 45 ns. Here each draw is an inversion
X = min{x : F(x) >= u} of the Poisson CDF F, which is tabulated once per bootstrap around each
cell's mean. The search starts at a Cornish–Fisher guess, so nearly every cell settles in one or two
vectorized comparison passes, and the whole draw is a handful of array operations (numpy releases
the GIL for them, so bootstrap threads run in parallel). Values of u beyond the table continue the
same inversion with scipy's Poisson CDF (`pdtr`), so the draw is exact, not truncated: it has the
Poisson distribution up to the floating-point rounding of F, like any inversion sampler.

A multinomial draw then follows from Poisson draws (`multinomial_counts`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln, ndtri, pdtr, pdtrc

# Table half-width in standard deviations (plus a fixed margin). Wider tables only make the exact
# out-of-table path rarer (here about 4e-8 per cell and draw); they never change the result.
_SPREAD = 5.5
_MARGIN = 6
# Starting guesses come from a table of the normal quantile z and the Cornish–Fisher skewness term
# (z^2 - 1) / 6 on a fine uniform grid of u (1 MiB, cache-resident); the walk corrects the rest.
_GRID = 1 << 16
_U = (np.arange(_GRID) + 0.5) / _GRID
_Z = ndtri(_U)
_SKEW = (_Z * _Z - 1.0) / 6.0


class PoissonTable:
    """Exact draws of independent Poisson(lam_k), k = 0..K-1, for one fixed vector of means."""

    def __init__(self, lam: ArrayLike, spread: float = _SPREAD) -> None:
        lam_arr = np.asarray(lam, dtype=np.float64).reshape(-1)
        if np.any(lam_arr < 0) or not np.all(np.isfinite(lam_arr)):
            raise ValueError("Poisson means must be finite and non-negative")
        self.lam = lam_arr
        self.sd = np.sqrt(lam_arr)
        lo = np.maximum(0.0, np.floor(lam_arr - spread * self.sd - 1.0)).astype(np.int64)
        need = np.ceil(lam_arr + spread * self.sd + _MARGIN).astype(np.int64) - lo + 1
        # Pad widths up to a geometric grid so that cells of one width form a 2-d block whose rows
        # are cumulated separately (a flat cumsum across cells would carry rounding from one cell
        # into the next).
        width = np.ceil(8.0 * 1.25 ** np.ceil(np.log(need / 8.0) / np.log(1.25))).astype(np.int64)
        width = np.maximum(width, need)
        # P(X < lo), the mass below each table.
        below = np.where(lo > 0, pdtr(np.maximum(lo - 1, 0), lam_arr), 0.0)
        # Flat layout: per cell, F(lo - 1) = `below` as a sentinel, then F(lo), ..., F(hi). The
        # sentinel lets the downward walk test F(x - 1) without bounds checks and stop at the
        # table's bottom by itself (F(lo - 1) < u unless u is below the table).
        self.start = np.empty(lam_arr.size, dtype=np.int64)
        self.cdf = np.empty(int((width + 1).sum()))
        offset = 0
        for w in np.unique(width):
            rows = np.flatnonzero(width == w)
            x = lo[rows, None] + np.arange(w)[None, :]
            lam_r = lam_arr[rows, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                logpmf = x * np.log(lam_r) - lam_r - gammaln(x + 1.0)
            pmf = np.where(lam_r > 0, np.exp(logpmf), (x == 0).astype(np.float64))
            block = np.empty((rows.size, w + 1))
            block[:, 0] = below[rows]
            block[:, 1:] = np.cumsum(pmf, axis=1) + below[rows, None]
            self.cdf[offset : offset + block.size] = block.reshape(-1)
            self.start[rows] = offset + 1 + np.arange(rows.size) * (w + 1)
            offset += block.size
        self.lo = lo
        self.last = self.start + width - 1
        self._offset = lo - self.start  # x = flat index + _offset
        # lam + _base0 is the flat index of x = lam; + 0.5 so that truncation rounds.
        self._base = self.lam - self._offset.astype(np.float64) + 0.5
        self._floor = self.start.astype(np.float64)
        self._ceil = None if spread >= 4.5 else self.last.astype(np.float64)

    def draw(self, rng: np.random.Generator) -> NDArray[np.int64]:
        u = rng.random(self.lam.size)
        cell = (u * _GRID).astype(np.int64)
        # Flat index of the guess x = lam + sd z + (z^2 - 1) / 6. The table reaches 5.5 standard
        # deviations above the mean and the grid's z only 4.3, so only the bottom needs a clamp.
        guess = np.maximum(self._base + self.sd * _Z[cell] + _SKEW[cell], self._floor)
        if self._ceil is not None:
            guess = np.minimum(guess, self._ceil)
        pos = guess.astype(np.int64)
        cdf, start, last = self.cdf, self.start, self.last
        low: list[NDArray[np.int64]] = []
        high: list[NDArray[np.int64]] = []
        # Walk down while F(x - 1) >= u ...
        idx = np.flatnonzero(cdf[pos - 1] >= u)
        while idx.size:
            pos[idx] -= 1
            out = pos[idx] < start[idx]  # stepped onto the sentinel: u is below the table
            low.append(idx[out])
            idx = idx[~out]
            idx = idx[cdf[pos[idx] - 1] >= u[idx]]
        # ... then up while F(x) < u.
        idx = np.flatnonzero(cdf[pos] < u)
        while idx.size:
            top = pos[idx] >= last[idx]  # at the table's top and still short: u is above it
            high.append(idx[top])
            idx = idx[~top]
            pos[idx] += 1
            idx = idx[cdf[pos[idx]] < u[idx]]
        x = pos + self._offset
        # u outside the table (about one cell in ten million): continue the inversion exactly.
        for c in np.concatenate(low + high + [np.zeros(0, dtype=np.int64)]).tolist():
            x[c] = _invert_tail(float(u[c]), float(self.lam[c]), int(self.lo[c]), int(x[c]))
        return x


def _invert_tail(u: float, lam: float, lo: int, hi: int) -> int:
    """min{x : P(X <= x) >= u} for Poisson(lam), when it lies below `lo` or above `hi`."""
    if lo == 0 and u <= 0.0:
        return 0
    if lo > 0 and u <= pdtr(lo - 1, lam):
        a, b = -1, lo - 1  # F(a) < u <= F(b), with F(-1) = 0
        while b - a > 1:
            mid = (a + b) // 2
            if pdtr(mid, lam) >= u:
                b = mid
            else:
                a = mid
        return b
    # Upper tail: compare survival functions, 1 - F(x) <= 1 - u, to keep precision near 1.
    v = 1.0 - u
    a = hi
    step = max(1, int(np.sqrt(lam)))
    b = a + step
    while pdtrc(b, lam) > v:
        a, b = b, b + step
        step *= 2
    while b - a > 1:
        mid = (a + b) // 2
        if pdtrc(mid, lam) <= v:
            b = mid
        else:
            a = mid
    return b


class Multinomial:
    """Repeated exact multinomial resampling of one table of counts (see `multinomial_counts`)."""

    def __init__(self, counts: ArrayLike) -> None:
        c = np.asarray(counts)
        flat = c.reshape(-1)
        if flat.size and (np.any(flat < 0) or np.any(flat != np.round(flat))):
            raise ValueError("counts must be non-negative integers")
        self.shape = c.shape
        self.counts = flat.astype(np.int64)
        self.n = int(self.counts.sum())
        self.cumulative = np.cumsum(self.counts)
        self.table = PoissonTable(self.counts)

    def draw(self, rng: np.random.Generator) -> NDArray[np.int64]:
        return _fix_total(self.table.draw(rng), self.n, self.cumulative, rng).reshape(self.shape)


def _fix_total(
    x: NDArray[np.int64], n: int, cumulative: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.int64]:
    """Turn independent Poisson(counts) cells into a multinomial draw of n items.

    Given their total T, Poisson cells are a multinomial of T items, in random order. Removing T - n
    of those items uniformly at random, or adding n - T fresh categorical draws, leaves n items
    drawn independently from counts / n: a multinomial of n items, whatever T was.
    """
    t = int(x.sum())
    if t > n:
        pos = rng.choice(t, size=t - n, replace=False)
        np.subtract.at(x, np.searchsorted(np.cumsum(x), pos, side="right"), 1)
    elif t < n:
        pos = rng.integers(0, n, size=n - t)
        np.add.at(x, np.searchsorted(cumulative, pos, side="right"), 1)
    return x


def multinomial_counts(counts: ArrayLike, rng: np.random.Generator) -> NDArray[np.int64]:
    """An exact multinomial draw: N = sum(counts) items, cell probabilities counts / N.

    Same distribution as `rng.multinomial(N, counts / N)`, from independent Poisson cells whose
    total is then fixed (see `_fix_total`); a Poisson draw is cheaper than the binomial draw per
    cell that `rng.multinomial` makes. To resample one table many times, use `Multinomial`.
    """
    c = np.asarray(counts)
    flat = c.reshape(-1)
    if flat.size and (np.any(flat < 0) or np.any(flat != np.round(flat))):
        raise ValueError("counts must be non-negative integers")
    counts64 = flat.astype(np.int64)
    x = rng.poisson(counts64).astype(np.int64)
    return _fix_total(x, int(counts64.sum()), np.cumsum(counts64), rng).reshape(c.shape)
