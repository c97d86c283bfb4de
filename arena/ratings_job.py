"""The ratings job: votes in the database become leaderboard snapshots.

One run reads every vote up to a cutoff, passes them through the exclusion pipeline (`STAGES`),
fits one board per category, each with and without style control, and appends all of them to
`snapshots` in one transaction. Nothing here serves a request: the leaderboard tab and the export
API only read what a run wrote (arena/leaderboard.py). See docs/leaderboard.md for every rule.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import math
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from scipy.sparse import csgraph, csr_matrix
from scipy.special import expit
from scipy.stats import chi2
from sqlalchemy.engine import Engine

import ratings
from arena import db
from arena.config import ArenaConfig
from arena.errors import SnapshotError
from arena.store import FLAGS_VERSION, Store
from ratings import RatingOptions

log = logging.getLogger(__name__)

OVERALL = "overall"
FIXED = ("coding", "math", "long", "multi_turn", "hard")
STYLE_NAMES = ("length", "headers", "lists", "bold")
# Outcome strings of the votes table, as ratings' outcome codes (a wins, b wins, tie, both bad).
OUTCOME_CODES = {"a": 0, "b": 1, "tie": 2, "both_bad": 3}


@dataclass
class Votes:
    """Every vote up to the cutoff, column by column, in vote order."""

    vote_id: NDArray[np.int64]
    model_a: NDArray[np.int64]  # indices into `models`
    model_b: NDArray[np.int64]
    outcome: NDArray[np.int64]
    voted: NDArray[np.bool_]  # the battle ended with a vote (not failed or abandoned)
    anony: NDArray[np.bool_]
    imported: NDArray[np.bool_]
    leak: NDArray[np.bool_]
    demo: NDArray[np.bool_]
    prompt: NDArray[np.int64]  # index of the prompt hash, -1 if unknown
    language: NDArray[np.int64]  # index into `languages`, -1 if unknown
    languages: list[str]
    tags: dict[str, NDArray[np.bool_]]  # per fixed category: the battle carries the tag
    turns: NDArray[np.int64]
    tokens: NDArray[np.float64]  # (votes, 2): per side, NaN if unknown
    style: NDArray[np.float64]  # (votes, 2, 4): length, headers, lists, bold per side; NaN
    models: list[str]
    voter: NDArray[np.int64]  # index into `voters`, -1 for none (imported votes)
    voters: list[str]
    ip: NDArray[np.int64]  # a number per distinct ip_hash (the hash itself is never kept), -1
    day: NDArray[np.int64]  # day of the vote (UTC), counted from 1970-01-01
    flagged: NDArray[np.bool_]  # an administrator flagged the battle (flag `flagged`)
    voter_flagged: NDArray[np.bool_]  # an administrator flagged the voter (`voters.flagged`)
    cutoff_at: datetime | None = None

    def __len__(self) -> int:
        return int(self.vote_id.size)

    @classmethod
    def of(
        cls,
        model_a: NDArray[np.int64],
        model_b: NDArray[np.int64],
        outcome: NDArray[np.int64],
        models: list[str],
        *,
        voter: NDArray[np.int64] | None = None,
        ip: NDArray[np.int64] | None = None,
        day: NDArray[np.int64] | None = None,
        flagged: NDArray[np.bool_] | None = None,
        voter_flagged: NDArray[np.bool_] | None = None,
        imported: NDArray[np.bool_] | None = None,
    ) -> Votes:
        """Votes made in memory (simulations, tests), in the given order: anonymous, finished,
        with no prompt, language, tags, tokens or style. Voter k is named `voter-k`; a voter or
        IP of -1 is none; missing columns are none, day 0, not flagged, not imported."""
        n = int(np.asarray(model_a).size)
        no = np.zeros(n, dtype=bool)
        voter = np.full(n, -1, dtype=np.int64) if voter is None else np.asarray(voter, np.int64)
        return cls(
            vote_id=np.arange(1, n + 1, dtype=np.int64),
            model_a=np.asarray(model_a, dtype=np.int64),
            model_b=np.asarray(model_b, dtype=np.int64),
            outcome=np.asarray(outcome, dtype=np.int64),
            voted=~no,
            anony=~no,
            imported=no if imported is None else np.asarray(imported, dtype=bool),
            leak=no,
            demo=no,
            prompt=np.full(n, -1, dtype=np.int64),
            language=np.full(n, -1, dtype=np.int64),
            languages=[],
            tags={tag: no for tag in FIXED},
            turns=np.ones(n, dtype=np.int64),
            tokens=np.full((n, 2), np.nan),
            style=np.full((n, 2, 4), np.nan),
            models=list(models),
            voter=voter,
            voters=[f"voter-{k}" for k in range(int(voter.max(initial=-1)) + 1)],
            ip=np.full(n, -1, dtype=np.int64) if ip is None else np.asarray(ip, np.int64),
            day=np.zeros(n, dtype=np.int64) if day is None else np.asarray(day, np.int64),
            flagged=no if flagged is None else np.asarray(flagged, dtype=bool),
            voter_flagged=no if voter_flagged is None else np.asarray(voter_flagged, dtype=bool),
        )

    @functools.cached_property
    def answers_by_model(self) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
        """Every answer with known tokens as (model, tokens per turn, vote), sorted by model and
        tokens: sorted once per run, filtered per board."""
        per_turn = self.tokens / self.turns[:, None]
        model = np.concatenate([self.model_a, self.model_b])
        tokens = np.concatenate([per_turn[:, 0], per_turn[:, 1]])
        vote = np.concatenate([np.arange(len(self)), np.arange(len(self))])
        ok = np.isfinite(tokens)
        model, tokens, vote = model[ok], tokens[ok], vote[ok]
        order = np.lexsort((tokens, model))
        return model[order], tokens[order], vote[order]


@dataclass
class Review:
    """What the vote-integrity stages found in one run, for an administrator: every snapshot of
    the run carries it as `review` (never shown by the public API; no IP, hashed or not)."""

    anomalous_voters: list[str] = field(default_factory=list)  # flagged by the anomaly test
    voters_tested: int = 0  # voters with enough votes for the anomaly test
    upsets: int = 0  # upset votes among the kept votes that have a voter
    upset_voters: list[dict[str, Any]] = field(default_factory=list)  # most upsets first
    # Each vote's weight in the fits (upsets weigh `upset_weight`); None: every vote weighs 1.
    weights: NDArray[np.float64] | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "anomalous_voters": self.anomalous_voters,
            "voters_tested": self.voters_tested,
            "upsets": self.upsets,
            "upset_voters": self.upset_voters,
        }


@dataclass(frozen=True)
class Context:
    config: ArenaConfig
    rated_models: frozenset[str] = frozenset()  # models known only from imported votes
    # Filled by the stages as they run (see `Review`).
    review: Review = field(default_factory=Review, compare=False)

    def public(self, name: str) -> bool:
        """May this model's rating be published? Unreleased models may not, and neither may
        a model nobody lists any more: it may be a codename withdrawn before release."""
        entry = self.config.find(name)
        return (entry is not None and not entry.unreleased) or (
            entry is None and name in self.rated_models
        )


# A stage returns the mask of votes it removes, given those still kept by earlier stages.
Stage = Callable[[Votes, NDArray[np.bool_], Context], NDArray[np.bool_]]
STAGES: list[tuple[str, Stage]] = []


def stage(name: str) -> Callable[[Stage], Stage]:
    """Register an exclusion stage; stages run in the order they are declared."""

    def register(fn: Stage) -> Stage:
        STAGES.append((name, fn))
        return fn

    return register


@stage("not_anonymous")
def _not_anonymous(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return ~votes.anony


@stage("unfinished")
def _unfinished(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return ~votes.voted


@stage("identity_leak")
def _identity_leak(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return votes.leak


@stage("demo")
def _demo(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    if ctx.config.demo:
        return np.zeros(len(votes), dtype=bool)
    return votes.demo


@stage("imported")
def _imported(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    if ctx.config.ratings.include_imported:
        return np.zeros(len(votes), dtype=bool)
    return votes.imported


@stage("hidden_model")
def _hidden_model(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    # Left out of every board, not only hidden when shown: a board fitted with a secret
    # model gives it away through the mean rating and the vote counts (review of issue 6).
    hidden = np.array([not ctx.public(m) for m in votes.models] + [False], dtype=bool)
    return hidden[votes.model_a] | hidden[votes.model_b]


# An administrator's flags come before the quotas below (prompt repeats, daily caps), so a
# flagged vote never takes a place that an unflagged one would have had.
@stage("flagged_battle")
def _flagged_battle(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return votes.flagged


@stage("flagged_voter")
def _flagged_voter(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return votes.voter_flagged


@stage("prompt_dedup")
def _prompt_dedup(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return dedup_prompts(
        votes.prompt,
        kept,
        ctx.config.ratings.dedup_top_fraction,
        ctx.config.ratings.dedup_max_per_prompt,
    )


def dedup_prompts(
    prompt: NDArray[np.int64], kept: NDArray[np.bool_], top_fraction: float, max_per_prompt: int
) -> NDArray[np.bool_]:
    """Votes to remove so that each of the most frequent prompts counts at most
    `max_per_prompt` times, keeping its earliest votes.

    "Most frequent": the ceil(top_fraction * distinct prompts) prompts with the most kept votes
    (the public arena's rule since 2025). Votes with no known prompt are never removed.
    """
    remove = np.zeros(prompt.size, dtype=bool)
    idx = np.flatnonzero(kept & (prompt >= 0))
    if idx.size == 0 or top_fraction <= 0:
        return remove
    counts = np.bincount(prompt[idx])
    distinct = int(np.count_nonzero(counts))
    top = math.ceil(top_fraction * distinct)
    # Stable order: among prompts with equal counts the lower index (first seen) ranks first.
    order = np.argsort(-counts, kind="stable")[:top]
    capped = np.zeros(counts.size, dtype=bool)
    capped[order[counts[order] > max_per_prompt]] = True
    if not capped.any():
        return remove
    sel = idx[capped[prompt[idx]]]  # votes of capped prompts, in vote order
    p = prompt[sel]
    # Rank of each vote within its prompt: position in a stable sort by prompt.
    by_prompt = np.argsort(p, kind="stable")
    sorted_p = p[by_prompt]
    starts = np.searchsorted(sorted_p, sorted_p, side="left")
    rank = np.empty(sel.size, dtype=np.int64)
    rank[by_prompt] = np.arange(sel.size) - starts
    remove[sel[rank >= max_per_prompt]] = True
    return remove


def rank_in_group(group: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each element, how many elements of the same group come before it (0 for the first)."""
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.searchsorted(sorted_group, sorted_group, side="left")
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = np.arange(group.size) - starts
    return rank


def daily_cap(
    who: NDArray[np.int64], day: NDArray[np.int64], kept: NDArray[np.bool_], cap: int
) -> NDArray[np.bool_]:
    """Votes to remove so that each `who` (voter or IP; -1 is nobody) counts at most `cap`
    votes a day, its earliest ones (votes are in vote order). `cap` 0: no cap."""
    remove = np.zeros(who.size, dtype=bool)
    idx = np.flatnonzero(kept & (who >= 0))
    if cap <= 0 or idx.size == 0:
        return remove
    # One group per (who, day): day numbers are small and who < 2**40, so the key fits.
    key = who[idx] * (1 << 22) + (day[idx] - day[idx].min())
    remove[idx[rank_in_group(key) >= cap]] = True
    return remove


# The cheap caps first, then the statistical stages: the anomaly test judges each voter on the
# votes that would count, and the upset filter, last, fits its ratings on the votes that passed
# everything else (a rigger's votes would bend them).
@stage("voter_daily_cap")
def _voter_daily_cap(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return daily_cap(votes.voter, votes.day, kept, ctx.config.ratings.counted_per_day_voter)


@stage("ip_daily_cap")
def _ip_daily_cap(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    return daily_cap(votes.ip, votes.day, kept, ctx.config.ratings.counted_per_day_ip)


# Score of each outcome (a, b, tie, both bad) for the anomaly test's two one-sided families: the
# left side's result, ties counting half, and the right side's.
_LEFT_SCORE = np.array([1.0, 0.0, 0.5, 0.5])
_RIGHT_SCORE = 1.0 - _LEFT_SCORE
ANOMALY_FAMILIES = 3  # left-leaning, right-leaning, rare outcomes
# Entropy mixed into the ratings seed for the anomaly test's draws ("anom"), so they are not the
# bootstrap's draws.
_ANOMALY_STREAM = 0x616E6F6D


def anomaly_pvalues(
    pair: NDArray[np.int64],
    outcome: NDArray[np.int64],
    voter: NDArray[np.int64],
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per-vote p-values of the anomaly test (Chiang et al. 2024, section 5.1, eq. 10).

    `pair` numbers the pair as shown (left model, right model); `voter` is -1 for votes without a
    voter, which make history but are never tested. For each vote of a voter, the history is the
    outcomes of the same shown pair in every vote of *other* voters (and voterless votes). Each
    p-value is the smoothed conformal p-value of the vote's outcome among the history's:
    (#history scoring higher + U * (#history scoring the same + 1)) / (#history + 1), U uniform on
    (0, 1], which is uniform on (0, 1) when the vote and its history are exchangeable. Three
    scores give three columns: the left side's result (ties half), the right side's, and the
    rarity of the outcome in the history with the vote itself added. Votes on a pair nobody else
    voted on carry no information and are left out.

    Returns the indices of the tested votes (ascending) and their p-values, shape (tested, 3).
    """
    _, pair = np.unique(pair, return_inverse=True)
    n_pairs = int(pair.max(initial=-1)) + 1
    total = np.bincount(pair * 4 + outcome, minlength=n_pairs * 4).reshape(n_pairs, 4)
    idx = np.flatnonzero(voter >= 0)
    _, cell = np.unique(voter[idx] * n_pairs + pair[idx], return_inverse=True)
    own = np.bincount(cell * 4 + outcome[idx], minlength=(int(cell.max(initial=-1)) + 1) * 4)
    history = (total[pair[idx]] - own.reshape(-1, 4)[cell]).astype(np.float64)
    size = history.sum(axis=1)
    informative = size > 0
    idx, history, size = idx[informative], history[informative], size[informative]
    o = outcome[idx]
    rows = np.arange(idx.size)
    u = 1.0 - rng.random(idx.size)  # in (0, 1]: a p-value of exactly 0 is impossible
    p = np.empty((idx.size, ANOMALY_FAMILIES))
    rarity = -(history + np.eye(4)[o])  # higher is rarer; the vote itself counts
    left = np.broadcast_to(_LEFT_SCORE, history.shape)
    right = np.broadcast_to(_RIGHT_SCORE, history.shape)
    for k, score in enumerate((left, right, rarity)):
        mine = score[rows, o][:, None]
        higher = (history * (score > mine)).sum(axis=1)
        same = (history * (score == mine)).sum(axis=1)
        p[:, k] = (higher + u * (same + 1.0)) / (size + 1.0)
    return idx, p


def anomalous(
    pair: NDArray[np.int64],
    outcome: NDArray[np.int64],
    voter: NDArray[np.int64],
    n_voters: int,
    *,
    alpha: float,
    checkpoints: int,
    min_votes: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The anomaly test: which voters are flagged, and which were tested (per voter number).

    A voter's tested votes, in vote order, give p-values p_1..p_n (`anomaly_pvalues`, one column
    per family). Fisher's statistic after the j-th vote is M_j = -2 sum_{i<=j} log p_i, which is
    chi-square with 2j degrees of freedom under the null. It is checked at `checkpoints` positions
    j drawn at random without replacement from 1..n (all of them when n is smaller), and the
    voter is flagged when any family's chi-square tail probability at any checkpoint is below
    alpha / (checkpoints * families): Bonferroni, so an honest voter is flagged with probability
    at most alpha. Voters with fewer than `min_votes` tested votes are not tested.
    """
    flagged = np.zeros(n_voters, dtype=bool)
    tested = np.zeros(n_voters, dtype=bool)
    if alpha <= 0:
        return flagged, tested
    idx, p = anomaly_pvalues(pair, outcome, voter, rng)
    if idx.size == 0:
        return flagged, tested
    order = np.argsort(voter[idx], kind="stable")  # by voter, each in vote order
    who = voter[idx][order]
    logs = -2.0 * np.log(p[order])
    starts = np.searchsorted(who, who, side="left")
    j = np.arange(who.size) - starts + 1
    counts = np.bincount(who, minlength=n_voters)
    tested = counts >= min_votes
    # `checkpoints` distinct positions per voter, uniformly: those whose random keys are the
    # voter's smallest.
    by_key = np.lexsort((rng.random(who.size), who))
    draw_rank = np.empty(who.size, dtype=np.int64)
    draw_rank[by_key] = np.arange(who.size) - starts[by_key]
    check = (draw_rank < checkpoints) & tested[who]
    total = np.cumsum(logs, axis=0)
    fisher = total - (total[starts] - logs[starts])  # running sums within each voter
    level = alpha / (checkpoints * ANOMALY_FAMILIES)
    tail = chi2.sf(fisher[check], 2 * j[check][:, None])
    flagged[who[check][(tail < level).any(axis=1)]] = True
    return flagged, tested


@stage("anomalous_voter")
def _anomalous_voter(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    r = ctx.config.ratings
    if not np.any(kept & (votes.voter >= 0)):  # nobody to test (imported votes only)
        return np.zeros(len(votes), dtype=bool)
    sel = np.flatnonzero(kept)
    rng = np.random.default_rng([ctx.config.rating_options.seed, _ANOMALY_STREAM])
    flagged, tested = anomalous(
        votes.model_a[sel] * len(votes.models) + votes.model_b[sel],
        votes.outcome[sel],
        votes.voter[sel],
        len(votes.voters),
        alpha=r.anomaly_alpha,
        checkpoints=r.anomaly_checkpoints,
        min_votes=r.anomaly_min_votes,
        rng=rng,
    )
    ctx.review.anomalous_voters = sorted(votes.voters[k] for k in np.flatnonzero(flagged))
    ctx.review.voters_tested = int(tested.sum())
    remove = np.zeros(len(votes), dtype=bool)
    has_voter = votes.voter >= 0
    remove[has_voter] = flagged[votes.voter[has_voter]]
    return remove


def upsets(
    model_a: NDArray[np.int64],
    model_b: NDArray[np.int64],
    outcome: NDArray[np.int64],
    n_models: int,
    probability: float,
    prior: float = 1.0,
) -> NDArray[np.bool_]:
    """Votes for a side that ratings fitted on these same votes (plain Bradley–Terry, ties as
    half, no position or style term) give a win probability below `probability`."""
    if model_a.size == 0 or probability <= 0:
        return np.zeros(model_a.size, dtype=bool)
    pc = ratings.group_battles(model_a, model_b, outcome, n_models)
    theta = ratings.bt_pairwise(pc, prior=prior).theta
    p_a = expit(theta[model_a] - theta[model_b])
    return ((outcome == 0) & (p_a < probability)) | ((outcome == 1) & (1.0 - p_a < probability))


UPSET_VOTERS_LISTED = 20  # the voters with the most upsets, in `review.upset_voters`


@stage("upset")
def _upset(votes: Votes, kept: NDArray[np.bool_], ctx: Context) -> NDArray[np.bool_]:
    """Upsets among the kept votes that have a voter (imported votes are outside the threat and
    never weighed down). Weight 1: counted and listed only; below 1: that weight in the fits;
    0: removed."""
    r = ctx.config.ratings
    upset = np.zeros(len(votes), dtype=bool)
    if not np.any(kept & (votes.voter >= 0)):  # no vote it could weigh (imported votes only)
        return upset
    sel = np.flatnonzero(kept)
    upset[sel] = upsets(
        votes.model_a[sel],
        votes.model_b[sel],
        votes.outcome[sel],
        len(votes.models),
        r.upset_probability,
        ctx.config.rating_options.prior or 1.0,
    )
    upset &= votes.voter >= 0
    ctx.review.upsets = int(upset.sum())
    per_voter = np.bincount(votes.voter[upset], minlength=len(votes.voters))
    cast = np.bincount(votes.voter[kept & (votes.voter >= 0)], minlength=len(votes.voters))
    top = np.argsort(-per_voter, kind="stable")[:UPSET_VOTERS_LISTED]
    ctx.review.upset_voters = [
        {"voter": votes.voters[k], "upsets": int(per_voter[k]), "votes": int(cast[k])}
        for k in top
        if per_voter[k] > 0
    ]
    weight = min(r.upset_weight, 1.0)
    if weight <= 0:
        return upset
    if weight < 1 and upset.any():
        ctx.review.weights = np.where(upset, weight, 1.0)
    return np.zeros(len(votes), dtype=bool)


def apply_stages(votes: Votes, ctx: Context) -> tuple[NDArray[np.bool_], list[dict[str, Any]]]:
    """Run the pipeline; returns the votes that count and what each stage removed."""
    kept = np.ones(len(votes), dtype=bool)
    counts = []
    for name, fn in STAGES:
        removed = fn(votes, kept, ctx) & kept
        kept &= ~removed
        counts.append({"name": name, "removed": int(removed.sum())})
    return kept, counts


# -- loading ---------------------------------------------------------------------------------


def _like(column: str, text: str) -> str:
    # JSON columns compared as text: the same SQL on SQLite (text) and PostgreSQL (json).
    return f"CASE WHEN CAST({column} AS TEXT) LIKE '%{text}%' THEN 1 ELSE 0 END"


def _flag(name: str) -> str:
    # The key with its colon: an imported judge label that spells a flag's name is a value,
    # and json.dumps (which writes every flags column) puts no space before the colon.
    return _like("b.flags", f'"{name}":')


def _tag(name: str) -> str:
    return _like("b.categories", f'"{name}"')


# Everything that can be decided per row is decided by the database, so Python only moves
# columns: at a million votes a per-row Python loop cost more than every fit together.
_SELECT = f"""
SELECT v.id,
       CASE v.outcome WHEN 'a' THEN 0 WHEN 'b' THEN 1 WHEN 'tie' THEN 2 ELSE 3 END,
       b.model_a, b.model_b,
       CASE WHEN b.status = 'voted' THEN 1 ELSE 0 END,
       CASE WHEN b.anony THEN 1 ELSE 0 END,
       CASE WHEN b.source = 'import' THEN 1 ELSE 0 END,
       {_flag("identity_leak")}, {_flag("demo")}, {_flag("flagged")},
       {", ".join(_tag(tag) for tag in FIXED)},
       b.language, b.prompt_hash, b.turns,
       b.tokens_a, b.tokens_b, b.length_a, b.length_b, b.headers_a, b.headers_b,
       b.lists_a, b.lists_b, b.bold_a, b.bold_b
FROM votes v JOIN battles b ON b.id = v.battle_id
WHERE v.id <= :cutoff
ORDER BY v.id
"""
_FLAGS = 6 + len(FIXED)  # the 0/1 columns after the model names: voted .. flagged, then tags
# Who cast each vote, read apart: imported votes (often nearly all of them) have neither a voter
# nor an address, and so cost this query nothing (with these columns in the query above, a run
# over 1.67M imported votes took 3 s longer).
_VOTERS = """
SELECT v.id, v.voter_id, v.ip_hash, {day}, CASE WHEN vo.flagged IS NOT NULL THEN 1 ELSE 0 END
FROM votes v LEFT JOIN voters vo ON vo.id = v.voter_id
WHERE v.id <= :cutoff AND (v.voter_id IS NOT NULL OR v.ip_hash IS NOT NULL)
ORDER BY v.id
"""
# The vote's day (UTC) as a number, in each database's words. SQLite keeps UTC times as text.
_DAY = {
    "sqlite": "CAST(strftime('%s', v.created_at) AS INTEGER) / 86400",
    "postgresql": "CAST(FLOOR(EXTRACT(EPOCH FROM v.created_at) / 86400) AS BIGINT)",
}
_CHUNK = 50_000


def _codes(values: tuple[Any, ...], index: dict[Any, int]) -> list[int]:
    """Each value's number in `index` (new values are added); None is -1."""
    return [-1 if v is None else index.setdefault(v, len(index)) for v in values]


def latest_vote(engine: Engine) -> int | None:
    with engine.connect() as conn:
        value = conn.scalar(sa.select(sa.func.max(db.votes.c.id)))
    return None if value is None else int(value)


def _run(conn: sa.Connection, sql: str, cutoff: int) -> sa.CursorResult[Any]:
    sql = sql.replace(":cutoff", str(int(cutoff)))
    if conn.dialect.paramstyle != "qmark":  # psycopg reads a bare % as a placeholder
        sql = sql.replace("%", "%%")
    return conn.exec_driver_sql(sql)


def load_votes(engine: Engine, cutoff: int) -> Votes:
    """Read every vote with id <= cutoff, with what the stages and fits need of its battle and
    voter, chunk by chunk into numpy columns."""
    models: dict[str, int] = {}
    prompts: dict[str, int] = {}
    languages: dict[str, int] = {}
    voters: dict[str, int] = {}
    ips: dict[str, int] = {}
    keys = ("id", "o", "a", "b", "flags", "lang", "prompt", "turns", "numbers")
    parts: dict[str, list[NDArray[Any]]] = {k: [] for k in keys}
    who: dict[str, list[NDArray[Any]]] = {k: [] for k in ("id", "voter", "ip", "day", "flagged")}
    with engine.connect() as conn:
        result = _run(conn, _SELECT, cutoff)
        while rows := result.fetchmany(_CHUNK):
            cols = list(zip(*rows, strict=True))
            parts["id"].append(np.array(cols[0], dtype=np.int64))
            parts["o"].append(np.array(cols[1], dtype=np.int64))
            parts["a"].append(np.array(_codes(cols[2], models), dtype=np.int64))
            parts["b"].append(np.array(_codes(cols[3], models), dtype=np.int64))
            parts["flags"].append(np.array(cols[4 : 4 + _FLAGS], dtype=bool).T)
            at = 4 + _FLAGS
            parts["lang"].append(np.array(_codes(cols[at], languages), dtype=np.int64))
            parts["prompt"].append(np.array(_codes(cols[at + 1], prompts), dtype=np.int64))
            parts["turns"].append(np.array(cols[at + 2], dtype=np.float64))
            # None becomes NaN: unknown counts.
            parts["numbers"].append(np.array(cols[at + 3 :], dtype=np.float64).T)
        day = _DAY.get(conn.dialect.name, _DAY["postgresql"])
        result = _run(conn, _VOTERS.replace("{day}", day), cutoff)
        while rows := result.fetchmany(_CHUNK):
            cols = list(zip(*rows, strict=True))
            who["id"].append(np.array(cols[0], dtype=np.int64))
            who["voter"].append(np.array(_codes(cols[1], voters), dtype=np.int64))
            who["ip"].append(np.array(_codes(cols[2], ips), dtype=np.int64))
            who["day"].append(np.array(cols[3], dtype=np.int64))
            who["flagged"].append(np.array(cols[4], dtype=bool))
        cutoff_at = conn.scalar(sa.select(db.votes.c.created_at).where(db.votes.c.id == cutoff))

    def joined(key: str, shape: tuple[int, ...], dtype: Any, of: Any = parts) -> NDArray[Any]:
        return np.concatenate(of[key]) if of[key] else np.zeros(shape, dtype=dtype)

    flags = joined("flags", (0, _FLAGS), bool)
    numbers = joined("numbers", (0, 10), np.float64)
    turns = joined("turns", (0,), np.float64)
    vote_id = joined("id", (0,), np.int64)
    # Each voter row's place among the votes. A vote committed after the first query read past
    # its id (PostgreSQL) is not among them: it waits for the next run.
    who_id = joined("id", (0,), np.int64, who)
    place = np.searchsorted(vote_id, who_id)
    found = place < vote_id.size
    found[found] &= vote_id[place[found]] == who_id[found]

    def per_vote(key: str, fill: Any, dtype: Any) -> NDArray[Any]:
        column = np.full(vote_id.size, fill, dtype=dtype)
        column[place[found]] = joined(key, (0,), dtype, who)[found]
        return column

    return Votes(
        vote_id=vote_id,
        model_a=joined("a", (0,), np.int64),
        model_b=joined("b", (0,), np.int64),
        outcome=joined("o", (0,), np.int64),
        voted=flags[:, 0].copy(),
        anony=flags[:, 1].copy(),
        imported=flags[:, 2].copy(),
        leak=flags[:, 3].copy(),
        demo=flags[:, 4].copy(),
        flagged=flags[:, 5].copy(),
        tags={tag: flags[:, 6 + k].copy() for k, tag in enumerate(FIXED)},
        prompt=joined("prompt", (0,), np.int64),
        language=joined("lang", (0,), np.int64),
        languages=list(languages),
        turns=np.where(np.isnan(turns) | (turns < 1), 1, turns).astype(np.int64),
        tokens=numbers[:, 0:2].copy(),
        style=numbers[:, 2:10].reshape(-1, 4, 2).transpose(0, 2, 1).copy(),
        models=list(models),
        voter=per_vote("voter", -1, np.int64),
        voters=list(voters),
        ip=per_vote("ip", -1, np.int64),
        day=per_vote("day", 0, np.int64),
        voter_flagged=per_vote("flagged", False, bool),
        cutoff_at=_as_datetime(cutoff_at),
    )


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- categories ------------------------------------------------------------------------------


def category_masks(votes: Votes, kept: NDArray[np.bool_], config: ArenaConfig) -> dict[str, Any]:
    """The boards to fit: overall, each fixed category, and each language with enough votes."""
    masks: dict[str, NDArray[np.bool_]] = {OVERALL: kept}
    for name in FIXED:
        masks[name] = votes.tags[name] & kept
    counted = np.bincount(
        votes.language[kept & (votes.language >= 0)], minlength=len(votes.languages)
    )
    for code in sorted(range(len(votes.languages)), key=lambda c: votes.languages[c]):
        if counted[code] >= config.ratings.language_min_votes:
            masks[f"language:{votes.languages[code]}"] = kept & (votes.language == code)
    return masks


# -- fitting ---------------------------------------------------------------------------------


def _r(x: float | np.floating[Any] | None, digits: int = 2) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), digits)


def _matrix(m: NDArray[Any], digits: int) -> list[list[float | None]]:
    rounded = np.round(np.asarray(m, dtype=np.float64), digits).tolist()
    return [[None if v != v else v for v in row] for row in rounded]  # NaN: no data


def _token_stats(
    votes: Votes, sel: NDArray[np.int64], n: int, local: NDArray[np.int64]
) -> tuple[list[float | None], list[float | None]]:
    """Median and mean tokens per answer (every sample and reward-model token; issue 7) for
    each of the `n` models of a board."""
    model, tokens, vote = votes.answers_by_model
    in_board = np.zeros(len(votes), dtype=bool)
    in_board[sel] = True
    keep = in_board[vote]
    # `local` numbers the board's models in the order of their global numbers, so the
    # answers stay sorted by model (and by tokens within a model) after the filter.
    model, tokens = local[model[keep]], tokens[keep]
    median: list[float | None] = [None] * n
    mean: list[float | None] = [None] * n
    starts = np.searchsorted(model, np.arange(n), side="left")
    stops = np.searchsorted(model, np.arange(n), side="right")
    for k in range(n):
        if stops[k] > starts[k]:
            median[k] = float(np.median(tokens[starts[k] : stops[k]]))
            mean[k] = float(np.mean(tokens[starts[k] : stops[k]]))
    return median, mean


def fit_board(
    votes: Votes,
    mask: NDArray[np.bool_],
    style_control: bool,
    options: RatingOptions,
    min_votes: int,
    weights: NDArray[np.float64] | None = None,
) -> dict[str, Any]:
    """One board: ratings, intervals, ranks and matrices over the votes in `mask`. `weights`
    (per vote, optional) weigh the votes in the fit; counts and win rates stay unweighted."""
    sel = np.flatnonzero(mask)
    style_a = style_b = None
    if style_control:
        known = np.all(np.isfinite(votes.style[sel]), axis=(1, 2))
        sel = sel[known]
        style_a, style_b = votes.style[sel, 0], votes.style[sel, 1]
    w = None if weights is None else weights[sel]
    if w is not None and np.all(w == 1.0):
        w = None  # the unweighted grouping is the faster one
    present = np.unique(np.concatenate([votes.model_a[sel], votes.model_b[sel]]))
    local = np.full(len(votes.models), -1, dtype=np.int64)
    local[present] = np.arange(present.size)
    a, b, o = local[votes.model_a[sel]], local[votes.model_b[sel]], votes.outcome[sel]
    n = int(present.size)
    if n == 0:  # an empty board: nothing to fit (a bootstrap of nothing has no answer)
        return {
            "votes": 0,
            "groups": 0,
            "position": None,
            "style": None,
            "rows": [],
            "models": [],
            "matrices": {"battles": [], "win_rate": [], "predicted": []},
        }
    rng = np.random.default_rng(options.seed)
    with warnings.catch_warnings():
        # Disconnected groups are reported as `groups`; zero-variance style columns get a
        # zero coefficient.
        warnings.simplefilter("ignore")
        board = ratings.rate_arena(
            a, b, o, n, options=options, style_a=style_a, style_b=style_b, weights=w, rng=rng
        )
    groups = int(
        csgraph.connected_components(
            csr_matrix((np.ones(a.size), (a, b)), shape=(n, n)), directed=False
        )[0]
    )
    pc = ratings.group_battles(a, b, o, n)
    counts = ratings.battle_count_matrix(pc)
    empirical = ratings.win_rate_matrix(pc)
    predicted = ratings.predicted_win_rate_matrix(board.rating)
    win_rate = ratings.model_win_rates(a, b, o, n)
    median, mean = _token_stats(votes, sel, n, local)
    names = [votes.models[i] for i in present]
    rows = []
    for k in board.order():
        if not np.isfinite(board.rating[k]):
            continue
        rows.append(
            {
                "model": names[k],
                "rating": _r(board.rating[k]),
                "lower": _r(board.lower[k], 3),
                "upper": _r(board.upper[k], 3),
                "rank_ub": int(board.rank_ub[k]),
                "rank_lb": int(board.rank_lb[k]),
                "votes": int(board.battles[k]),
                "win_rate": _r(win_rate[k], 4),
                "median_tokens": _r(median[k], 1),
                "mean_tokens": _r(mean[k], 1),
                "preliminary": int(board.battles[k]) < min_votes,
            }
        )
    position = None
    if board.position_coef is not None:
        position = {
            "coef": _r(board.position_coef, 4),
            "lower": _r(board.position_lower, 4),
            "upper": _r(board.position_upper, 4),
            "elo": _r(board.position_coef * ratings.ELO_PER_UNIT, 1),
        }
    style = None
    if style_control and board.coef is not None:
        style = {
            name: {
                "coef": _r(board.coef[i], 4),
                "lower": _r(board.coef_lower[i], 4) if board.coef_lower is not None else None,
                "upper": _r(board.coef_upper[i], 4) if board.coef_upper is not None else None,
            }
            for i, name in enumerate(STYLE_NAMES)
        }
    return {
        "votes": int(sel.size),
        # Models that never met, directly or through others, are on one scale only through
        # the prior: more than one group makes comparisons across groups meaningless.
        "groups": groups,
        "position": position,
        "style": style,
        "rows": rows,
        "models": names,
        "matrices": {
            "battles": counts.tolist(),
            "win_rate": _matrix(empirical, 4),
            "predicted": _matrix(predicted, 4),
        },
    }


# -- the run ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    run_id: str | None  # None: nothing new to rate, nothing written
    snapshots: int = 0
    votes_counted: int = 0
    votes_total: int = 0
    seconds: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)
    review: dict[str, Any] = field(default_factory=dict)  # the snapshots' `review`


def _last_run(engine: Engine) -> tuple[int | None, dict[str, Any] | None]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(db.snapshots.c.cutoff_vote_id, db.snapshots.c.payload)
            .order_by(db.snapshots.c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None, None
    return row.cutoff_vote_id, json.loads(gzip.decompress(row.payload))["params"]


def _rated_models(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(db.rated_models.c.name)))


def params_of(config: ArenaConfig) -> dict[str, Any]:
    """Everything that decides a board, recorded whole in each snapshot."""
    r = config.ratings
    return {
        "options": config.rating_options.to_dict(),
        "dedup_top_fraction": r.dedup_top_fraction,
        "dedup_max_per_prompt": r.dedup_max_per_prompt,
        "include_imported": r.include_imported,
        "language_min_votes": r.language_min_votes,
        # The integrity settings, grouped; anomaly_alpha is `anomaly.level`, since a hidden
        # model's name must appear nowhere in a payload, keys included, and "alpha" is a name.
        "anomaly": {
            "level": r.anomaly_alpha,
            "checkpoints": r.anomaly_checkpoints,
            "min_votes": r.anomaly_min_votes,
        },
        "upset": {"probability": r.upset_probability, "weight": r.upset_weight},
        "counted_per_day": {"voter": r.counted_per_day_voter, "ip": r.counted_per_day_ip},
        "min_votes": config.leaderboard.min_votes,
        "demo": config.demo,
    }


def compute(
    engine: Engine,
    config: ArenaConfig,
    *,
    force: bool = False,
    fail_after: int | None = None,
) -> RunResult:
    """One ratings run. Writes nothing when there is no vote yet, or when no vote arrived and no
    parameter changed since the last run, unless `force`. `fail_after` (tests only) raises
    after that many boards, to show that a failed run leaves no partial snapshot."""
    started = time.perf_counter()
    rated = _rated_models(engine)
    ctx = Context(config, frozenset(rated))
    params = params_of(config)
    # Releasing a model (or listing a new one) must bring a new run even without new votes;
    # the names are public, so their digest is too.
    public = sorted(n for n in {*(m.name for m in config.models), *rated} if ctx.public(n))
    params["public_models"] = hashlib.sha256("\n".join(public).encode()).hexdigest()[:16]
    # An administrator's flag changes what counts without a new vote: it brings a run too.
    params["flags_version"] = Store(engine).meta(FLAGS_VERSION)
    cutoff: int | None = latest_vote(engine)
    last_cutoff, last_params = _last_run(engine)
    if not force and (
        cutoff is None  # no vote at all yet: an empty leaderboard says nothing
        or (last_params is not None and cutoff == last_cutoff and params == last_params)
    ):
        return RunResult(run_id=None)
    votes = load_votes(engine, cutoff if cutoff is not None else 0)
    kept, stages = apply_stages(votes, ctx)
    masks = category_masks(votes, kept, config)
    boards: list[tuple[str, bool, dict[str, Any]]] = []
    for category, mask in masks.items():
        for style_control in (False, True):
            if fail_after is not None and len(boards) >= fail_after:
                raise SnapshotError(f"stopped after {fail_after} boards (test)")
            fit = fit_board(
                votes,
                mask,
                style_control,
                config.rating_options,
                config.leaderboard.min_votes,
                ctx.review.weights,
            )
            boards.append((category, style_control, fit))
    seconds = time.perf_counter() - started
    run_id = str(uuid.uuid4())
    created = datetime.now(UTC)
    cutoff_info = {
        "vote_id": cutoff,
        "at": votes.cutoff_at.isoformat() if votes.cutoff_at else None,
    }
    review = ctx.review.payload()
    with engine.begin() as conn:
        for category, style_control, fit in boards:
            payload = {
                "run_id": run_id,
                "created_at": created.isoformat(),
                "category": category,
                "style_control": style_control,
                "cutoff": cutoff_info,
                "params": params,
                "stages": stages,
                "review": review,
                "votes_total": len(votes),
                "votes_counted": int(kept.sum()),
                "duration_ms": round(seconds * 1000, 1),
                "categories": list(masks),
                **fit,
            }
            conn.execute(
                db.snapshots.insert().values(
                    run_id=run_id,
                    created_at=created,
                    category=category,
                    style_control=style_control,
                    cutoff_vote_id=cutoff,
                    cutoff_at=votes.cutoff_at,
                    votes=fit["votes"],
                    payload=gzip.compress(json.dumps(payload).encode("utf-8"), 6),
                )
            )
    return RunResult(
        run_id=run_id,
        snapshots=len(boards),
        votes_counted=int(kept.sum()),
        votes_total=len(votes),
        seconds=time.perf_counter() - started,
        stages=stages,
        review=review,
    )
