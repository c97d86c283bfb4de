"""Online Elo, in the convention public arenas publish (FastChat `compute_elo`).

Every model starts at 1000. After a battle, each side moves by K * (score - expected), with
expected = 1 / (1 + base^((r_other - r_self) / scale)), K = 4, base 10, scale 400, and a tie (or
both bad) scoring 0.5. Online Elo depends on the order of the battles and has no uncertainty model;
the leaderboard uses Bradley–Terry (`ratings.bt`), its order-free maximum-likelihood counterpart.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .battles import _check_battles

# Score of model_a for outcome codes a wins, b wins, tie, both bad.
_SCORE_A = (1.0, 0.0, 0.5, 0.5)


def elo_online(
    model_a: ArrayLike,
    model_b: ArrayLike,
    outcome: ArrayLike,
    n_models: int | None = None,
    k: float = 4.0,
    base: float = 10.0,
    scale: float = 400.0,
    init: float = 1000.0,
) -> NDArray[np.float64]:
    """Ratings after replaying the battles in the given order."""
    a, b, o, n = _check_battles(model_a, model_b, outcome, n_models)
    rating = [float(init)] * n
    # A plain Python loop over Python floats: each update depends on the previous one, and scalar
    # float arithmetic is several times faster than numpy scalars here.
    for ia, ib, oc in zip(a.tolist(), b.tolist(), o.tolist(), strict=True):
        ra, rb = rating[ia], rating[ib]
        expected = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        delta = k * (_SCORE_A[oc] - expected)
        rating[ia] = ra + delta
        rating[ib] = rb - delta
    return np.array(rating)
