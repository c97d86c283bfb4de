"""Style control: Bradley–Terry with per-battle style covariates.

Following LMSYS's style control (blog post "Does style matter? Disentangling style and substance in
Chatbot Arena", Aug 2024; FastChat `rating_systems.py`), a battle's log-odds are

    theta_a - theta_b + x . beta

where x holds one covariate per style element. Each covariate is (a - b) / (a + b + 1) of the two
answers' counts (length in tokens, markdown headers, list items, bold spans), then z-scored over the
battles. The style-adjusted rating of a model is its theta: its strength when both answers have the
same (average) style. Ties count as half a win. The coefficients carry an L2 penalty penalty/2 *
|beta|^2 on the summed log-likelihood (default 0.5, FastChat's `reg=0.5`); the strengths carry the
same virtual-tie prior as `bt_pairwise`. A covariate with zero variance carries no information: it
is dropped (coefficient 0, flagged in `StyleFit.dropped`) instead of turning the z-score into 0/0,
which makes the reference code return 1000 for every model.

Position. With `position=True`, `style_data` appends a constant column of 1s, so that the log-odds
gain a term gamma: gamma > 0 means the side shown as model_a (the left side in the arena) is
favoured. The column is not z-scored (gamma is in natural log-odds units per battle) and carries the
same L2 penalty as the style coefficients. It is exempt from the zero-variance drop, since the
strengths enter as differences, but not from a drop of its own: when the sides are confounded with
the models (some v has v_a - v_b = 1 for every battle, as whenever the battle graph is a forest),
the constant is a combination of the strength columns, gamma is identified only by the prior and
the penalty, and the sandwich would report that direction as certain. The column is then dropped
(with a warning), as it is when there are no battles.

Battles with covariates cannot be grouped (each has its own), so the fit works on the battles
directly, with the same Newton / sandwich / chord-bootstrap machinery as the grouped fit. Without
covariates (the position term alone) the design depends only on the ordered pair, and
`style_data(..., group=True)` groups battles into rows (model_a, model_b, score, weight) with a
count. That is exact, as for `group_battles`: the objective, the sandwich and the bootstrap (an
exact multinomial over the rows) are those of the battles.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csgraph, csr_matrix
from scipy.special import expit

from .battles import _DENSE_LIMIT, _check_battles
from .bt import _prior_terms, laplacian, newton_maximize
from .sampling import Multinomial
from .uncertainty import _inverse, apply_chord, chord_matrix, chord_status, run_chunks

# Score of outcome codes a wins, b wins, tie, both bad.
_SCORE = np.array([1.0, 0.0, 0.5, 0.5])
STYLE_ELEMENTS: tuple[str, ...] = ("length", "headers", "lists", "bold")
# Chord iterations before a bootstrap round falls back to a full Newton refit.
_MAX_CHORD = 40
_CHUNK = 4


def style_features(style_a: ArrayLike, style_b: ArrayLike) -> NDArray[np.float64]:
    """Style covariates from per-side counts: (a - b) / (a + b + 1), then z-scored per column.

    `style_a` and `style_b` are (battles, elements) arrays of non-negative counts (e.g. length,
    headers, list items, bold spans of each answer). A column with zero variance becomes all zeros.
    """
    sa = np.asarray(style_a, dtype=np.float64)
    sb = np.asarray(style_b, dtype=np.float64)
    if sa.ndim == 1:
        sa, sb = sa[:, None], sb.reshape(-1, 1)
    if sa.shape != sb.shape or sa.ndim != 2:
        raise ValueError("style_a and style_b must be (battles, elements) arrays of the same shape")
    if not (np.all(np.isfinite(sa)) and np.all(np.isfinite(sb))):
        raise ValueError("style counts must be finite")
    if np.any(sa < 0) or np.any(sb < 0):
        raise ValueError("style counts must be non-negative")
    x = (sa - sb) / (sa + sb + 1.0)
    mean = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    std = x.std(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    return (x - mean) / np.where(std > 0, std, 1.0)


@dataclass(frozen=True)
class StyleFit:
    """A fitted style-controlled Bradley–Terry model (natural units).

    `coef` has one entry per covariate column (0 for dropped columns); `dropped` flags the columns
    with zero variance that were left out. With `position`, the last column is the position term
    (see `style_coef` and `position_coef`).
    """

    theta: NDArray[np.float64]
    coef: NDArray[np.float64]
    dropped: NDArray[np.bool_]
    prior: float
    penalty: float
    loglik: float
    iterations: int
    position: bool = False

    @property
    def style_coef(self) -> NDArray[np.float64]:
        """The style coefficients only (per standard deviation of each covariate)."""
        return self.coef[:-1] if self.position else self.coef

    @property
    def position_coef(self) -> float | None:
        """gamma, the log-odds gain of model_a's side; None without the position term, NaN when it
        was left out (no battles, or sides confounded with the models)."""
        if not self.position:
            return None
        return float("nan") if self.dropped[-1] else float(self.coef[-1])

    @property
    def params(self) -> NDArray[np.float64]:
        """theta followed by the coefficients of the kept columns: what the covariances refer to."""
        return np.concatenate([self.theta, self.coef[~self.dropped]])


@dataclass(frozen=True)
class StyleData:
    """Battles prepared for the style fit.

    `xt` holds the kept covariates transposed, (covariates, battles), so that every product with it
    is a contiguous pass that numpy's einsum does without BLAS (see `uncertainty.apply_chord`).
    `dropped` has one flag per covariate column before the drop. With `position`, the last of those
    columns is the constant position column. `count`, if set, says how many identical battles each
    row stands for (each with weight `weight`); None means one battle per row.
    """

    a: NDArray[np.int64]
    b: NDArray[np.int64]
    y: NDArray[np.float64]
    xt: NDArray[np.float64]
    weight: NDArray[np.float64]
    n_models: int
    dropped: NDArray[np.bool_]
    position: bool = False
    count: NDArray[np.float64] | None = None

    @property
    def n_battles(self) -> int:
        return int(self.a.size) if self.count is None else int(np.rint(self.count.sum()))

    @property
    def row_weight(self) -> NDArray[np.float64]:
        """Weight of each row in the summed log-likelihood: weight times count."""
        return self.weight if self.count is None else self.weight * self.count

    @property
    def n_coef(self) -> int:
        return int(self.xt.shape[0])


def incidence(a: NDArray[np.int64], b: NDArray[np.int64], n: int) -> csr_matrix:
    """(battles x models) sparse matrix, +1 at model_a and -1 at model_b, built in O(battles)."""
    m = a.size
    indices = np.column_stack([a, b]).reshape(-1)
    data = np.tile([1.0, -1.0], m)
    return csr_matrix((data, indices, np.arange(0, 2 * m + 1, 2)), shape=(m, n))


def _softplus(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """log(1 + e^z) without overflow."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def sides_confounded(a: NDArray[np.int64], b: NDArray[np.int64], n: int) -> bool:
    """Whether some v has v_a - v_b = 1 for every battle (a, b).

    Then the constant position column equals the strength columns times v: the side bias cannot be
    told apart from the strengths. Exact (integer) check: a pair played both ways round rules it
    out; otherwise potentials along a spanning forest of the battle graph are the only candidate.
    """
    if a.size == 0:
        return True
    keys = np.sort(a * n + b)  # sorted and deduplicated (faster than np.unique here)
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    pa, pb = keys // n, keys % n
    if np.intersect1d(keys, pb * n + pa, assume_unique=True).size:
        return False
    graph = csr_matrix((np.ones(keys.size), (pa, pb)), shape=(n, n))
    undirected = (graph + graph.T).tocsr()
    v = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    for root in np.unique(np.concatenate([pa, pb])).tolist():
        if seen[root]:
            continue
        order, pred = csgraph.breadth_first_order(
            undirected, root, directed=False, return_predecessors=True
        )
        seen[order] = True
        nodes = order[1:]
        parents = pred[nodes]
        # A battle (parent, node) asks v_node = v_parent - 1; (node, parent) the opposite.
        tree_keys = parents * n + nodes
        at = np.minimum(np.searchsorted(keys, tree_keys), keys.size - 1)
        step = np.where(keys[at] == tree_keys, -1, 1)
        for node, parent, d in zip(nodes.tolist(), parents.tolist(), step.tolist(), strict=True):
            v[node] = v[parent] + d  # breadth-first order: the parent is already set
    return bool(np.all(v[pa] - v[pb] == 1))


def _ordered_cells(
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    o: NDArray[np.int64],
    n: int,
    w: NDArray[np.float64],
    weighted: bool,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray, NDArray]:
    """Battles grouped by (model_a, model_b, score class, weight): rows a, b, outcome (0, 1 or 2 for
    any tie), count, weight; rows sorted by key."""
    key = (a * n + b) * 3 + np.minimum(o, 2)
    if not weighted:
        if n * n * 3 <= max(_DENSE_LIMIT, 4 * key.size):
            table = np.bincount(key, minlength=n * n * 3)
            cells = np.flatnonzero(table)
            count = table[cells]
        else:
            cells, count = np.unique(key, return_counts=True)
        weight = np.ones(cells.size)
    else:
        order = np.lexsort((w, key))
        ks, ws = key[order], w[order]
        new = np.ones(ks.size, dtype=bool)
        new[1:] = (ks[1:] != ks[:-1]) | (ws[1:] != ws[:-1])
        first = np.flatnonzero(new)
        cells, weight = ks[first], ws[first]
        count = np.diff(np.append(first, ks.size))
    pair, cls = np.divmod(cells, 3)
    return pair // n, pair % n, cls, count.astype(np.float64), weight


def style_data(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcome: ArrayLike,
    features: ArrayLike,
    n_models: int | None = None,
    weights: ArrayLike | None = None,
    *,
    position: bool = False,
    group: bool = False,
) -> StyleData:
    """Validate battles and covariates; drop covariate columns with zero variance (and warn).

    `features` may have zero columns. With `position=True` a constant column of 1s is appended
    after them: its coefficient is the log-odds gain of the model_a side. It is exempt from the
    zero-variance drop; it is dropped when the sides are confounded with the models
    (`sides_confounded`, with a warning) and, silently, when there are no battles.

    `group=True` (only for `features` without columns) groups the battles into one row per
    (model_a, model_b, score, weight) with a count: exact, and much smaller for many battles.
    """
    a, b, o, n = _check_battles(model_a, model_b, outcome, n_models)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != a.size:
        raise ValueError("features must be a (battles, covariates) array")
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    if group and x.shape[1]:
        raise ValueError(
            "group=True needs features without columns (battles with covariates cannot be grouped)"
        )
    w = np.ones(a.size) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != a.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite, non-negative and one per battle")
    dropped = np.ptp(x, axis=0) == 0 if a.size else np.ones(x.shape[1], dtype=bool)
    if np.any(dropped):
        warnings.warn(
            f"style covariate column(s) {np.flatnonzero(dropped).tolist()} have zero variance and "
            "are dropped (coefficient 0)",
            stacklevel=2,
        )
    count = None
    if group:
        a, b, o, count, w = _ordered_cells(a, b, o, n, w, weights is not None)
        x = np.zeros((a.size, 0))
    if position:
        x = np.column_stack([x, np.ones(a.size)])
        confounded = sides_confounded(a, b, n)
        if confounded and a.size:
            warnings.warn(
                "the sides are confounded with the models (the model_a side of every battle is "
                "explained by the strengths alone), so the side bias cannot be estimated: the "
                "position term is left out",
                stacklevel=2,
            )
        dropped = np.append(dropped, confounded)
    xt = np.ascontiguousarray(x[:, ~dropped].T)
    return StyleData(a, b, _SCORE[o], xt, w, n, dropped, position, count)


# --------------------------------------------------------------------------------------------------
# Objective, score, information. params = (theta, beta over kept columns).


def _split(params: NDArray, data: StyleData) -> tuple[NDArray, NDArray]:
    n = data.n_models
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (n + data.n_coef,):
        raise ValueError(f"params must have length {n + data.n_coef}")
    return params[:n], params[n:]


def _logits(theta: NDArray, beta: NDArray, data: StyleData) -> NDArray[np.float64]:
    return theta[data.a] - theta[data.b] + np.einsum("fn,f->n", data.xt, beta)


def style_loglik(
    params: NDArray, data: StyleData, prior: float = 1.0, penalty: float = 0.5
) -> float:
    """Penalized log-likelihood of the style model."""
    theta, beta = _split(params, data)
    z = _logits(theta, beta, data)
    # y log sigma(z) + (1 - y) log sigma(-z) = y z - log(1 + e^z)
    ll = float(np.sum(data.row_weight * (data.y * z - _softplus(z))))
    return ll + _prior_terms(theta, prior)[0] - 0.5 * penalty * float(beta @ beta)


def style_score(
    params: NDArray, data: StyleData, prior: float = 1.0, penalty: float = 0.5
) -> NDArray:
    """Gradient of `style_loglik`."""
    theta, beta = _split(params, data)
    r = data.row_weight * (data.y - expit(_logits(theta, beta, data)))
    n = data.n_models
    g_theta = np.bincount(data.a, r, n) - np.bincount(data.b, r, n) + _prior_terms(theta, prior)[1]
    return np.concatenate([g_theta, np.einsum("fn,n->f", data.xt, r) - penalty * beta])


def _block(v: NDArray, data: StyleData, diag: NDArray, extra: NDArray) -> NDArray[np.float64]:
    """Symmetric matrix sum_k v_k z_k z_k^T with z_k = (e_a - e_b, x_k), plus diagonal terms."""
    n, f = data.n_models, data.n_coef
    out = np.empty((n + f, n + f))
    out[:n, :n] = laplacian(data.a, data.b, v, n)
    out[np.diag_indices(n)] += diag
    vxt = data.xt * v
    for col in range(f):
        cross = np.bincount(data.a, vxt[col], n) - np.bincount(data.b, vxt[col], n)
        out[:n, n + col] = cross
        out[n + col, :n] = cross
    out[n:, n:] = np.einsum("fn,gn->fg", vxt, data.xt) + np.diag(extra)
    return out


def _information(params: NDArray, data: StyleData, prior: float, penalty: float) -> NDArray:
    theta, beta = _split(params, data)
    p = expit(_logits(theta, beta, data))
    f = data.n_coef
    return _block(
        data.row_weight * p * (1.0 - p), data, _prior_terms(theta, prior)[2], np.full(f, penalty)
    )


def style_hessian(
    params: NDArray, data: StyleData, prior: float = 1.0, penalty: float = 0.5
) -> NDArray[np.float64]:
    """Hessian of `style_loglik` (negative definite)."""
    return -_information(params, data, prior, penalty)


def bt_style(
    data: StyleData,
    prior: float = 1.0,
    penalty: float = 0.5,
    tol: float = 1e-10,
    max_iter: int = 200,
    init: NDArray[np.float64] | None = None,
) -> StyleFit:
    """Fit the style-controlled Bradley–Terry model by Newton's method with a line search."""
    if prior <= 0:
        raise ValueError("style control needs prior > 0")
    if penalty < 0:
        raise ValueError("penalty must be non-negative")
    n, f = data.n_models, data.n_coef
    params = np.zeros(n + f) if init is None else np.array(init, dtype=np.float64)
    params, obj, iterations = newton_maximize(
        lambda p: style_loglik(p, data, prior, penalty),
        lambda p: style_score(p, data, prior, penalty),
        lambda p: _information(p, data, prior, penalty),
        params,
        n,
        prior,
        tol,
        max_iter,
    )
    coef = np.zeros(data.dropped.size)
    coef[~data.dropped] = params[n:]
    return StyleFit(
        params[:n].copy(), coef, data.dropped, prior, penalty, obj, iterations, data.position
    )


def sandwich_style(data: StyleData, fit: StyleFit) -> NDArray[np.float64]:
    """Robust covariance H^-1 G H^-1 of `fit.params` (strengths, then kept coefficients)."""
    params = fit.params
    theta, beta = _split(params, data)
    p = expit(_logits(theta, beta, data))
    f = data.n_coef
    h = _information(params, data, fit.prior, fit.penalty)
    # Each battle contributes its own squared score: a row of `count` battles, count times.
    r2 = (data.weight * (data.y - p)) ** 2
    if data.count is not None:
        r2 = r2 * data.count
    g = _block(r2, data, np.zeros(data.n_models), np.zeros(f))
    hi = _inverse(h, data.n_models + f, 1.0)
    cov = hi @ g @ hi
    return 0.5 * (cov + cov.T)


def bootstrap_style(
    data: StyleData,
    rounds: int,
    rng: np.random.Generator,
    fit: StyleFit | None = None,
    prior: float = 1.0,
    penalty: float = 0.5,
    workers: int | None = None,
    tol: float = 1e-7,
) -> NDArray[np.float64]:
    """Bootstrap refits of the style model; returns (rounds, len(params)) natural-unit parameters.

    Each round draws the battles with replacement (N uniform indices, an exact multinomial; for
    grouped rows the same multinomial, drawn over the rows) and refits by chord iteration from the
    full-data estimate with the full-data Hessian inverse, restricted to the rows drawn at least
    once; a round that does not settle is refitted by full Newton. Threads as in
    `bootstrap_pairwise`; results depend on `rng` only.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    if fit is None:
        fit = bt_style(data, prior=prior, penalty=penalty)
    prior, penalty = fit.prior, fit.penalty
    n, f, m = data.n_models, data.n_coef, data.a.size
    # Battles are drawn with replacement: N uniform indices, or for grouped rows the same thing as
    # an exact multinomial over the rows.
    sampler = None if data.count is None else Multinomial(np.rint(data.count))
    params0 = fit.params
    h_inv = chord_matrix(_information(params0, data, prior, penalty), n, prior)
    wy = data.weight * data.y

    def one_round(
        count: NDArray[np.int64],
    ) -> tuple[NDArray[np.float64], bool]:
        keep = np.flatnonzero(count)
        c = count[keep].astype(np.float64)
        cw = c * data.weight[keep]
        cwy = c * wy[keep]
        sub = incidence(data.a[keep], data.b[keep], n)
        sub_t = sub.T  # CSC view: products with it need no conversion
        xt = data.xt[:, keep]
        params = params0.copy()
        last = np.inf
        for _ in range(_MAX_CHORD):
            theta, beta = params[:n], params[n:]
            z = sub @ theta + np.einsum("fn,f->n", xt, beta)
            resid = cwy - cw * expit(z)
            grad = np.concatenate(
                [
                    sub_t @ resid + _prior_terms(theta, prior)[1],
                    np.einsum("fn,n->f", xt, resid) - penalty * beta,
                ]
            )
            step = apply_chord(h_inv, grad)
            size = float(np.max(np.abs(step)))
            conv, grows = chord_status(np.array([size]), np.array([last]), tol)
            if grows[0]:
                return params, False
            params = params + step
            last = size
            if conv[0]:
                return params, True
        return params, False

    def task(start: int, stop: int, r: np.random.Generator) -> NDArray[np.float64]:
        out = np.empty((stop - start, n + f))
        for k in range(stop - start):
            if sampler is None:
                count = np.bincount(r.integers(0, m, size=m), minlength=m)
            else:
                count = sampler.draw(r)
            params, ok = one_round(count)
            if not ok:
                boot = StyleData(
                    data.a,
                    data.b,
                    data.y,
                    data.xt,
                    data.weight * count,
                    n,
                    data.dropped,
                    data.position,
                )
                params = bt_style(boot, prior, penalty, tol=tol, init=params0).params
            out[k] = params
        return out

    return run_chunks(task, rounds, rng, workers, chunk=_CHUNK)
