"""Simulated battles with known strengths, for tests, coverage studies and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


# Kinds of simulated voter (`simulate_voters`).
HONEST, RANDOM, ALWAYS_A, OMNIPRESENT, TARGET_ONLY = (
    "honest",
    "random",
    "always_a",
    "omnipresent",
    "target_only",
)
VOTER_KINDS: tuple[str, ...] = (HONEST, RANDOM, ALWAYS_A, OMNIPRESENT, TARGET_ONLY)


@dataclass(frozen=True)
class VoterBattles:
    """Simulated votes with the voter who cast each, in vote (time) order.

    `voter` numbers the voters 0..len(kinds)-1; `kinds[v]` is voter v's kind; `ip` numbers the
    client addresses; `day` is the vote's day (0..days-1).
    """

    model_a: NDArray[np.int64]
    model_b: NDArray[np.int64]
    outcome: NDArray[np.int64]
    voter: NDArray[np.int64]
    ip: NDArray[np.int64]
    day: NDArray[np.int64]
    kinds: tuple[str, ...]


def simulate_voters(
    theta: ArrayLike,
    rng: np.random.Generator,
    *,
    honest: int,
    mean_votes: float,
    days: int,
    bad: Mapping[str, int],
    bad_votes: int | Mapping[str, int],
    target: int = 0,
    rigger_ips: int = 1,
    bad_days: int | None = None,
    tie_rate: float = 0.2,
    position: float = 0.0,
) -> VoterBattles:
    """Honest voters plus planted bad ones, each voting on uniformly random pairs.

    - honest: `honest` voters with a geometric number of votes each (at least 1, mean
      `mean_votes`), outcomes from Bradley–Terry with strengths `theta`, ties as in
      `simulate_battles` ("score"), half of them both-bad, and a left-side bias `position`;
    - random (`bad["random"]` voters): each of the four buttons with probability 1/4;
    - always_a: always "A is better";
    - omnipresent: in every battle with the `target` model, a vote for the target; otherwise a
      random button (it cannot tell the other models apart);
    - target_only: a vote for the target in its battles, honest otherwise.

    Every bad voter casts `bad_votes` votes (`bad_votes[kind]` if a mapping). Votes fall at
    uniformly random times over `days` days, a bad voter's over the first `bad_days` of them (all
    by default); honest, random and always-A voters each have an address of their own, while the
    omnipresent and target-only riggers share `rigger_ips` addresses (rigger k uses address
    k mod rigger_ips of that pool).
    """
    th = np.asarray(theta, dtype=np.float64)
    unknown = set(bad) - set(VOTER_KINDS[1:])
    if unknown:
        raise ValueError(f"unknown voter kinds: {sorted(unknown)}")
    counts = [rng.geometric(1.0 / mean_votes, size=honest)]
    kinds = [HONEST] * honest
    for kind in VOTER_KINDS[1:]:
        n = int(bad.get(kind, 0))
        cast = bad_votes if isinstance(bad_votes, int) else int(bad_votes.get(kind, 0))
        counts.append(np.full(n, cast))
        kinds += [kind] * n
    per_voter = np.concatenate(counts).astype(np.int64)
    voter = np.repeat(np.arange(per_voter.size), per_voter)
    kind_of = np.asarray(kinds)[voter]
    a, b = random_pairs(th.size, voter.size, rng)
    probs = outcome_probabilities(th[a] - th[b] + position, tie_rate)
    outcome = _draw_outcomes(probs, 0.5, rng)
    buttons = rng.integers(0, 4, size=voter.size)
    with_target = (a == target) | (b == target)
    for_target = np.where(a == target, A_WINS, B_WINS)
    outcome = np.select(
        [
            kind_of == RANDOM,
            kind_of == ALWAYS_A,
            (kind_of == OMNIPRESENT) & with_target,
            kind_of == OMNIPRESENT,
            (kind_of == TARGET_ONLY) & with_target,
        ],
        [buttons, np.full(voter.size, A_WINS), for_target, buttons, for_target],
        outcome,
    ).astype(np.int64)
    riggers = np.isin(np.asarray(kinds), (OMNIPRESENT, TARGET_ONLY))
    own = np.cumsum(~riggers) - 1  # addresses 0.. for the others, in voter order
    rigger_rank = np.cumsum(riggers) - 1
    address = np.where(riggers, own.max(initial=-1) + 1 + rigger_rank % max(rigger_ips, 1), own)
    span = np.where(kind_of == HONEST, days, days if bad_days is None else bad_days)
    time = rng.random(voter.size) * span
    order = np.argsort(time, kind="stable")
    return VoterBattles(
        model_a=a[order],
        model_b=b[order],
        outcome=outcome[order],
        voter=voter[order],
        ip=address[voter][order].astype(np.int64),
        day=np.floor(time[order]).astype(np.int64),
        kinds=tuple(kinds),
    )
