"""The bootstrap's exact samplers: tabulated Poisson inversion and multinomial resampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ratings import Multinomial, PoissonTable, multinomial_counts

LAMBDAS = [0.0, 0.3, 1.0, 3.0, 17.0, 50.0, 400.0, 50_000.0]


@pytest.mark.parametrize("spread", [5.5, 1.0, 0.2])
def test_poisson_table_is_exact_inversion_of_the_poisson_cdf(spread: float) -> None:
    # Inversion maps each uniform u to min{x : F(x) >= u}. Replaying the generator's uniforms
    # through scipy's Poisson quantile function must give the very same numbers. Narrow tables
    # (small spread) send most draws through the out-of-table path, which must agree too.
    lam = np.repeat(LAMBDAS, 2000)
    table = PoissonTable(lam, spread=spread)
    x = table.draw(np.random.default_rng(5))
    u = np.random.default_rng(5).random(lam.size)
    expected = stats.poisson.ppf(u, lam)
    mismatch = np.flatnonzero(x != expected)
    # Allow only ties at floating-point precision between two CDF evaluations.
    for k in mismatch:
        assert abs(stats.poisson.cdf(min(x[k], expected[k]), lam[k]) - u[k]) < 1e-12
    assert mismatch.size <= 2


def test_poisson_table_distribution() -> None:
    rng = np.random.default_rng(0)
    for lam in (0.3, 17.0, 400.0):
        table = PoissonTable(np.full(20_000, lam))
        x = np.concatenate([table.draw(rng) for _ in range(5)])
        lo, hi = (int(v) for v in stats.poisson.ppf([1e-4, 1 - 1e-4], lam))
        observed = np.array([np.sum(x <= lo), *[np.sum(x == k) for k in range(lo + 1, hi)], 0])
        observed[-1] = np.sum(x >= hi)
        probs = np.array(
            [stats.poisson.cdf(lo, lam), *stats.poisson.pmf(np.arange(lo + 1, hi), lam), 0.0]
        )
        probs[-1] = stats.poisson.sf(hi - 1, lam)
        assert stats.chisquare(observed, probs * x.size).pvalue > 1e-3


def test_poisson_table_rejects_bad_means() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        PoissonTable([1.0, -2.0])


def multinomial_pmf(x: tuple[int, ...], p: np.ndarray) -> float:
    n = sum(x)
    coef = math.factorial(n) / math.prod(math.factorial(k) for k in x)
    return coef * float(np.prod(p ** np.array(x)))


@pytest.mark.parametrize("use_table", [False, True])
def test_multinomial_draws_have_exactly_the_multinomial_distribution(use_table: bool) -> None:
    counts = np.array([3, 1, 2, 0, 1])
    n, p = counts.sum(), counts / counts.sum()
    rng = np.random.default_rng(0)
    sampler = Multinomial(counts)
    # The Poisson total is above and below N = 7 often, so both fix-ups run.
    draws = 60_000
    seen: dict[tuple[int, ...], int] = {}
    for _ in range(draws):
        x = sampler.draw(rng) if use_table else multinomial_counts(counts, rng)
        key = tuple(int(v) for v in x)
        seen[key] = seen.get(key, 0) + 1
    support = [x for x in itertools.product(range(n + 1), repeat=5) if sum(x) == n and x[3] == 0]
    assert set(seen) <= set(support)
    expected = np.array([multinomial_pmf(x, p) for x in support]) * draws
    observed = np.array([seen.get(x, 0) for x in support])
    rare = expected < 5  # pool rare outcomes so every chi-square cell expects at least 5
    exp_cells = np.append(expected[~rare], expected[rare].sum())
    obs_cells = np.append(observed[~rare], observed[rare].sum())
    assert stats.chisquare(obs_cells, exp_cells).pvalue > 1e-3


def test_multinomial_on_a_large_table_keeps_the_total_and_the_moments() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 40, 3000)
    n = counts.sum()
    sampler = Multinomial(counts)
    x = np.array([sampler.draw(rng) for _ in range(2000)])
    assert np.all(x.sum(axis=1) == n)
    assert np.all(x[:, counts == 0] == 0)
    p = counts / n
    live = p > 0
    z_mean = (x.mean(axis=0) - n * p)[live] / np.sqrt(n * p * (1 - p) / 2000)[live]
    assert np.abs(z_mean).max() < 5
    var_ratio = x.var(axis=0)[live] / (n * p * (1 - p))[live]
    assert 0.97 < var_ratio.mean() < 1.03
    # Cells compete for a fixed total: half the table has variance N p_S (1 - p_S), about half of
    # what independent Poisson cells would give.
    p_half = p[:1500].sum()
    assert x[:, :1500].sum(axis=1).var() == pytest.approx(n * p_half * (1 - p_half), rel=0.1)


def test_multinomial_rejects_fractions() -> None:
    with pytest.raises(ValueError, match="integers"):
        multinomial_counts(np.array([1.5, 2.0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="integers"):
        Multinomial(np.array([1.5, 2.0]))
