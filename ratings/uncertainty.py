"""Standard errors and resampling for the Bradley–Terry fit.

- `sandwich_pairwise`: robust covariance H^-1 G H^-1 (Huber 1967; White 1982), H the observed
  information and G the sum over battles of the outer product of each battle's score. Under
  ties-as-half the likelihood is a quasi-likelihood: a tie scores 0.5, whose variance is smaller
  than the Bernoulli variance the plain Fisher information H^-1 assumes, so H^-1 is too wide
  (18-31%, median 25%, on real Arena votes). The sandwich is what the public leaderboard moved to
  in 2025 (lmarena/arena-rank).
- `bootstrap_pairwise`: nonparametric bootstrap (Efron 1979) by exact multinomial resampling of the
  grouped counts; each round is refitted to convergence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray
from scipy import linalg
from scipy.sparse import csr_matrix
from scipy.special import expit

from .battles import PairCounts
from .bt import (
    BTFit,
    Ties,
    _information,
    bt_pairwise,
    bt_score,
    score_covariance,
    three_columns,
)
from .sampling import Multinomial

# Rounds per task. Fixed (not derived from the worker count) so results do not depend on `workers`.
_CHUNK = 16
# Chord iterations before a round falls back to a full Newton refit.
_MAX_CHORD = 40


def _inverse(h: NDArray[np.float64], n: int, prior: float) -> NDArray[np.float64]:
    """Inverse of the information; without a prior, the pseudo-inverse on identified directions."""
    if prior > 0:
        return linalg.inv(h)
    # Only differences of strengths are identified; invert on the complement of the all-ones
    # direction.
    u = np.zeros(h.shape[0])
    u[:n] = 1.0 / np.sqrt(n)
    hi = linalg.inv(h + np.outer(u, u))
    return hi - np.outer(hi @ u, hi @ u) / float(u @ hi @ u)


def sandwich_pairwise(pc: PairCounts, fit: BTFit) -> NDArray[np.float64]:
    """Robust (sandwich) covariance H^-1 G H^-1 of `fit.params` in natural units."""
    params = fit.params
    h = _information(params, pc, fit.ties, fit.prior)
    g = score_covariance(params, pc, fit.ties)
    hi = _inverse(h, pc.n_models, fit.prior)
    cov = hi @ g @ hi
    return 0.5 * (cov + cov.T)


def fisher_pairwise(pc: PairCounts, fit: BTFit) -> NDArray[np.float64]:
    """Model-based covariance H^-1. Too wide under ties-as-half; kept for comparison only."""
    h = _information(fit.params, pc, fit.ties, fit.prior)
    return _inverse(h, pc.n_models, fit.prior)


def _integer_counts(pc: PairCounts) -> NDArray[np.float64]:
    c = three_columns(pc.counts)
    if np.any(c != np.round(c)):
        raise ValueError("the bootstrap resamples battles, so counts must be whole numbers")
    return c


def chord_matrix(h: NDArray[np.float64], n: int, prior: float) -> NDArray[np.float64]:
    """Inverse of the full-data information, used for every chord step of every bootstrap round.

    Without a prior, h + 1 1^T / n is inverted instead (see `bt.newton_step`).
    """
    if prior == 0:
        h = h.copy()
        h[:n, :n] += 1.0 / n
    return linalg.inv(h)


def apply_chord(h_inv: NDArray[np.float64], grad: NDArray[np.float64]) -> NDArray[np.float64]:
    """h_inv @ grad without BLAS.

    The bootstrap runs in threads; a multithreaded BLAS call from each of them leaves the BLAS
    worker threads spinning on the cores the other Python thread needs, which cancelled the gain
    from threads on a 2-core machine. numpy's einsum loops are single-threaded.
    """
    if grad.ndim == 1:
        return np.einsum("ij,j->i", h_inv, grad)
    return np.einsum("ij,jb->ib", h_inv, grad)


def run_chunks(
    task: Callable[[int, int, np.random.Generator], NDArray[np.float64]],
    rounds: int,
    rng: np.random.Generator,
    workers: int | None,
    chunk: int = _CHUNK,
) -> NDArray[np.float64]:
    """Run `task(start, stop, rng)` over chunks of rounds, each with its own child generator."""
    starts = list(range(0, rounds, chunk))
    children = rng.spawn(len(starts))
    jobs = [(s, min(s + chunk, rounds), r) for s, r in zip(starts, children, strict=True)]
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(jobs) == 1:
        parts = [task(*job) for job in jobs]
    else:
        # numpy's random draws and ufuncs and scipy's sparse products release the GIL, so threads
        # use both cores without copying the data into worker processes.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda job: task(*job), jobs))
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0))


def bootstrap_pairwise(
    pc: PairCounts,
    rounds: int,
    rng: np.random.Generator,
    ties: Ties = "half",
    prior: float = 1.0,
    fit: BTFit | None = None,
    workers: int | None = None,
    tol: float = 1e-7,
) -> NDArray[np.float64]:
    """Bootstrap `rounds` refits; returns an array (rounds, len(params)) of natural-unit parameters.

    Each round resamples all battles with replacement (an exact multinomial draw over the grouped
    cells, `sampling.Multinomial`) and refits to convergence: the estimated distance to the
    round's optimum is below `tol` (natural units; 1e-7 is 2e-5 Elo). The refit is a chord
    (simplified Newton) iteration: it starts from the full-data estimate and reuses the inverse of
    the full-data Hessian, so each step costs one gradient and one matrix product, and the 16 rounds
    of a chunk step together as the columns of one matrix. A round that does not settle within a few
    dozen steps is refitted by full Newton. Chunks run in `workers` threads (default: all cores).
    Results depend on `rng` only, not on `workers`.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    if fit is None:
        fit = bt_pairwise(pc, ties=ties, prior=prior)
    elif fit.ties != ties or fit.prior != prior:
        raise ValueError("fit was made with a different tie model or prior")
    n = pc.n_models
    counts = _integer_counts(pc)
    cells = np.flatnonzero(counts.reshape(-1) > 0)
    cell_counts = counts.reshape(-1)[cells].astype(np.int64)
    n_rows = pc.n_rows
    params0 = fit.params
    h_inv = chord_matrix(_information(params0, pc, ties, prior), n, prior)

    sampler = Multinomial(cell_counts)

    def resample(r: np.random.Generator) -> NDArray[np.float64]:
        out = np.zeros(n_rows * 3)
        out[cells] = sampler.draw(r)
        return out.reshape(n_rows, 3)

    if ties == "half":
        chord = _half_chord(pc, prior, params0, h_inv, tol)
    else:
        chord = _generic_chord(pc, ties, prior, params0, h_inv, tol)

    def task(start: int, stop: int, r: np.random.Generator) -> NDArray[np.float64]:
        draws = [resample(r) for _ in range(start, stop)]
        params, ok = chord(draws)
        for b in np.flatnonzero(~ok):
            # Rare (small or lopsided data): refit this round from scratch by full Newton.
            boot = PairCounts(pc.i, pc.j, _four(draws[b]), n, pc.weight)
            params[b] = bt_pairwise(boot, ties=ties, prior=prior, tol=tol, init=params0).params
        return params

    return run_chunks(task, rounds, rng, workers)


def _four(c3: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.column_stack([c3, np.zeros(c3.shape[0])])


def chord_status(
    size: NDArray[np.float64], last: NDArray[np.float64], tol: float
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Convergence and divergence of chord steps, given this step's and the previous step's size.

    The chord iteration converges linearly: with contraction ratio r = size / last the error left
    after this step is about size * r / (1 - r), so the round is done once that (or the step itself)
    is below `tol`. A step that doubles is diverging.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(last), size / last, 1.0)
        left = np.where(ratio < 0.5, size * ratio / (1.0 - ratio), np.inf)
    return (size < tol) | (left < tol), size >= 2.0 * last


Chord = Callable[[list[NDArray[np.float64]]], tuple[NDArray[np.float64], NDArray[np.bool_]]]


def _half_chord(
    pc: PairCounts, prior: float, params0: NDArray, h_inv: NDArray, tol: float
) -> Chord:
    """Batched chord iteration for ties-as-half: a chunk's rounds are the columns of one matrix."""
    n, k = pc.n_models, pc.n_rows
    rows = np.arange(k)
    # Incidence D (n x rows): +1 at i, -1 at j. D^T theta gives the row differences, D r the
    # gradient.
    d_mat = csr_matrix(
        (
            np.concatenate([np.ones(k), -np.ones(k)]),
            (np.concatenate([pc.i, pc.j]), np.tile(rows, 2)),
        ),
        shape=(n, k),
    )
    d_t = d_mat.T.tocsr()
    w = pc.weight[:, None]

    def chord(draws: list[NDArray[np.float64]]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        b = len(draws)
        score = np.empty((k, b))
        total = np.empty((k, b))
        for col, c in enumerate(draws):
            score[:, col] = c[:, 0] + 0.5 * c[:, 2]
            total[:, col] = c[:, 0] + c[:, 1] + c[:, 2]
        score *= w
        total *= w
        theta = np.repeat(params0[:, None], b, axis=1)
        done = np.zeros(b, dtype=bool)
        failed = np.zeros(b, dtype=bool)
        last = np.full(b, np.inf)
        for _ in range(_MAX_CHORD):
            live = np.flatnonzero(~(done | failed))
            if live.size == 0:
                break
            if live.size == b:
                th, sc, tt = theta, score, total
            else:
                th, sc, tt = theta[:, live], score[:, live], total[:, live]
            resid = sc - tt * expit(d_t @ th)
            grad = d_mat @ resid
            if prior > 0:
                grad += prior * (0.5 - expit(th))
            step = apply_chord(h_inv, grad)
            size = np.max(np.abs(step), axis=0)
            ok, grows = chord_status(size, last[live], tol)
            failed[live[grows]] = True
            move = ~grows
            theta[:, live[move]] += step[:, move]
            last[live[move]] = size[move]
            done[live[move & ok]] = True
        if prior == 0:
            theta -= theta.mean(axis=0)
        return theta.T.copy(), done

    return chord


def _generic_chord(
    pc: PairCounts,
    ties: str,
    prior: float,
    params0: NDArray,
    h_inv: NDArray,
    tol: float,
) -> Chord:
    """Chord iteration one round at a time, for the tie models."""
    n = pc.n_models

    def chord(draws: list[NDArray[np.float64]]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        out = np.repeat(params0[None, :], len(draws), axis=0)
        ok = np.zeros(len(draws), dtype=bool)
        for b, c3 in enumerate(draws):
            boot = PairCounts(pc.i, pc.j, _four(c3), n, pc.weight)
            params = params0.copy()
            last = np.inf
            for _ in range(_MAX_CHORD):
                step = apply_chord(h_inv, bt_score(params, boot, ties, prior))  # type: ignore[arg-type]
                size = float(np.max(np.abs(step)))
                trial = params + step
                conv, grows = chord_status(np.array([size]), np.array([last]), tol)
                if grows[0] or not np.all(np.isfinite(trial)):
                    break
                if ties == "rao-kupper" and trial[n] <= 0:
                    break
                params, last = trial, size
                if conv[0]:
                    ok[b] = True
                    break
            if prior == 0:
                params[:n] -= params[:n].mean()
            out[b] = params
        return out, ok

    return chord
