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
from sqlalchemy.engine import Engine

import ratings
from arena import db
from arena.config import ArenaConfig
from arena.errors import SnapshotError
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
    cutoff_at: datetime | None = None

    def __len__(self) -> int:
        return int(self.vote_id.size)

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


@dataclass(frozen=True)
class Context:
    config: ArenaConfig
    rated_models: frozenset[str] = frozenset()  # models known only from imported votes

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
       {_flag("identity_leak")}, {_flag("demo")},
       {", ".join(_tag(tag) for tag in FIXED)},
       b.language, b.prompt_hash, b.turns,
       b.tokens_a, b.tokens_b, b.length_a, b.length_b, b.headers_a, b.headers_b,
       b.lists_a, b.lists_b, b.bold_a, b.bold_b
FROM votes v JOIN battles b ON b.id = v.battle_id
WHERE v.id <= :cutoff
ORDER BY v.id
"""
_FLAGS = 5 + len(FIXED)  # the 0/1 columns after the model names: voted .. demo, then tags
_CHUNK = 50_000


def _codes(values: tuple[Any, ...], index: dict[Any, int]) -> list[int]:
    """Each value's number in `index` (new values are added); None is -1."""
    return [-1 if v is None else index.setdefault(v, len(index)) for v in values]


def latest_vote(engine: Engine) -> int | None:
    with engine.connect() as conn:
        value = conn.scalar(sa.select(sa.func.max(db.votes.c.id)))
    return None if value is None else int(value)


def load_votes(engine: Engine, cutoff: int) -> Votes:
    """Read every vote with id <= cutoff, with what the stages and fits need of its battle,
    chunk by chunk into numpy columns."""
    models: dict[str, int] = {}
    prompts: dict[str, int] = {}
    languages: dict[str, int] = {}
    parts: dict[str, list[NDArray[Any]]] = {
        k: [] for k in ("id", "o", "a", "b", "flags", "lang", "prompt", "turns", "numbers")
    }
    with engine.connect() as conn:
        sql = _SELECT.replace(":cutoff", str(int(cutoff)))
        if conn.dialect.paramstyle != "qmark":  # psycopg reads a bare % as a placeholder
            sql = sql.replace("%", "%%")
        result = conn.exec_driver_sql(sql)
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
        cutoff_at = conn.scalar(sa.select(db.votes.c.created_at).where(db.votes.c.id == cutoff))

    def joined(key: str, shape: tuple[int, ...], dtype: Any) -> NDArray[Any]:
        return np.concatenate(parts[key]) if parts[key] else np.zeros(shape, dtype=dtype)

    flags = joined("flags", (0, _FLAGS), bool)
    numbers = joined("numbers", (0, 10), np.float64)
    turns = joined("turns", (0,), np.float64)
    return Votes(
        vote_id=joined("id", (0,), np.int64),
        model_a=joined("a", (0,), np.int64),
        model_b=joined("b", (0,), np.int64),
        outcome=joined("o", (0,), np.int64),
        voted=flags[:, 0].copy(),
        anony=flags[:, 1].copy(),
        imported=flags[:, 2].copy(),
        leak=flags[:, 3].copy(),
        demo=flags[:, 4].copy(),
        tags={tag: flags[:, 5 + k].copy() for k, tag in enumerate(FIXED)},
        prompt=joined("prompt", (0,), np.int64),
        language=joined("lang", (0,), np.int64),
        languages=list(languages),
        turns=np.where(np.isnan(turns) | (turns < 1), 1, turns).astype(np.int64),
        tokens=numbers[:, 0:2].copy(),
        style=numbers[:, 2:10].reshape(-1, 4, 2).transpose(0, 2, 1).copy(),
        models=list(models),
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


def _median_tokens(votes: Votes, sel: NDArray[np.int64], n: int, local: NDArray[np.int64]) -> Any:
    """Median completion tokens per answer for each of the `n` models of a board."""
    model, tokens, vote = votes.answers_by_model
    in_board = np.zeros(len(votes), dtype=bool)
    in_board[sel] = True
    keep = in_board[vote]
    # `local` numbers the board's models in the order of their global numbers, so the
    # answers stay sorted by model (and by tokens within a model) after the filter.
    model, tokens = local[model[keep]], tokens[keep]
    out: list[float | None] = [None] * n
    starts = np.searchsorted(model, np.arange(n), side="left")
    stops = np.searchsorted(model, np.arange(n), side="right")
    for k in range(n):
        if stops[k] > starts[k]:
            out[k] = float(np.median(tokens[starts[k] : stops[k]]))
    return out


def fit_board(
    votes: Votes,
    mask: NDArray[np.bool_],
    style_control: bool,
    options: RatingOptions,
    min_votes: int,
) -> dict[str, Any]:
    """One board: ratings, intervals, ranks and matrices over the votes in `mask`."""
    sel = np.flatnonzero(mask)
    style_a = style_b = None
    if style_control:
        known = np.all(np.isfinite(votes.style[sel]), axis=(1, 2))
        sel = sel[known]
        style_a, style_b = votes.style[sel, 0], votes.style[sel, 1]
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
            a, b, o, n, options=options, style_a=style_a, style_b=style_b, rng=rng
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
    median = _median_tokens(votes, sel, n, local)
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
                votes, mask, style_control, config.rating_options, config.leaderboard.min_votes
            )
            boards.append((category, style_control, fit))
    seconds = time.perf_counter() - started
    run_id = str(uuid.uuid4())
    created = datetime.now(UTC)
    cutoff_info = {
        "vote_id": cutoff,
        "at": votes.cutoff_at.isoformat() if votes.cutoff_at else None,
    }
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
    )
