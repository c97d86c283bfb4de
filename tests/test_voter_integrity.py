"""The ratings job's vote-integrity stages: an administrator's flags, daily caps, the anomalous
voter test and the upset filter (docs/security.md), on votes in memory and in a real database."""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from arena import db
from arena.config import parse_config
from arena.lifecycle import Outcome, Side
from arena.ratings_job import (
    STAGES,
    Context,
    Votes,
    anomalous,
    anomaly_pvalues,
    apply_stages,
    compute,
    daily_cap,
    fit_board,
)
from arena.store import Store
from bench.integrity import OFF, SCENARIOS, config, evaluate, print_report
from ratings import RatingOptions
from ratings.simulate import HONEST, simulate_voters
from tests.test_leaderboard import MODELS, answer, play, registry

INTEGRITY = [
    "flagged_battle",
    "flagged_voter",
    "prompt_dedup",
    "voter_daily_cap",
    "ip_daily_cap",
    "anomalous_voter",
    "upset",
]


def test_stage_order() -> None:
    """Flags before the quotas, the quotas before the statistical tests, the upset filter last
    (its ratings are fitted on what every other stage kept)."""
    names = [name for name, _ in STAGES]
    assert names[names.index("hidden_model") + 1 :] == INTEGRITY


# -- the simulation --------------------------------------------------------------------------


def test_simulated_bad_voters_are_flagged_and_the_rigged_model_stays_put() -> None:
    """Honest voters plus random, always-A and omnipresent voters (bench/integrity.py, "burst"):
    the defences flag the bad voters, few honest ones, and undo the rigger's gain."""
    report = evaluate(SCENARIOS["burst"])
    print_report(report)  # pytest -s shows the figures
    on = "on (defaults)"
    # True positives, among the voters tested (all the bad ones are: 60 votes or more).
    assert report.tested["random"] == report.voters["random"] == 20
    assert report.rate(on, "random") >= 0.7
    assert report.rate(on, "always_a") >= 0.95
    assert report.rate(on, "omnipresent") >= 0.95
    # False positives: the test's level is 5% per honest voter.
    assert report.tested[HONEST] >= 500
    assert report.rate(on, HONEST) <= 0.05
    # Without the defences nothing is flagged and the rigger lifts the target; with them it
    # stays where the honest votes put it.
    assert sum(report.outcome("off").flagged.values()) == 0
    assert report.places("off") >= 2 and report.gain("off") > 30
    assert report.places(on) <= 0
    assert abs(report.gain(on)) < report.gain("off") / 5
    # Each defence does its part: the caps cut the burst, the anomaly test the voters.
    assert report.outcome("daily caps only").removed["voter_daily_cap"] > 0
    assert report.outcome("daily caps only").removed["ip_daily_cap"] > 0
    assert report.gain("daily caps only") < report.gain("off")
    assert abs(report.gain("anomaly test only")) < report.gain("off") / 5


def test_pvalues_of_honest_voters_are_uniform_and_few_are_flagged() -> None:
    """Under the null (every voter honest) each family of p-values is uniform, so Fisher's
    statistic is chi-square and the share of voters flagged stays under alpha."""
    sim = simulate_voters(
        SCENARIOS["burst"].theta(),
        np.random.default_rng(3),
        honest=2000,
        mean_votes=15,
        days=1,
        bad={},
        bad_votes=0,
        position=0.2,
    )
    pair = sim.model_a * 12 + sim.model_b
    _, p = anomaly_pvalues(pair, sim.outcome, sim.voter, np.random.default_rng(4))
    assert p.shape[0] > 25_000
    for column in p.T:
        assert abs(column.mean() - 0.5) < 0.01
        assert 0.04 < np.mean(column < 0.05) < 0.06
    kw: Any = {"checkpoints": 5, "min_votes": 10, "rng": np.random.default_rng(5)}
    flagged, tested = anomalous(pair, sim.outcome, sim.voter, 2000, alpha=0.05, **kw)
    assert tested.sum() > 1000
    assert flagged[tested].mean() <= 0.05 and not flagged[~tested].any()
    # alpha 0 turns the test off.
    none, _ = anomalous(pair, sim.outcome, sim.voter, 2000, alpha=0.0, **kw)
    assert not none.any()


# -- each stage in memory --------------------------------------------------------------------


def run(votes: Votes, **ratings: Any) -> tuple[np.ndarray, dict[str, int], Context]:
    ctx = Context(config(**ratings), frozenset(votes.models))
    kept, stages = apply_stages(votes, ctx)
    return kept, {s["name"]: s["removed"] for s in stages}, ctx


def test_daily_caps_keep_the_earliest_votes_of_each_day() -> None:
    who = np.array([0, 0, 0, 0, 1, 0, -1, -1, -1, 0])
    day = np.array([5, 5, 5, 6, 5, 6, 5, 5, 5, 6])
    kept = np.ones(who.size, dtype=bool)
    # Voter 0 cast three votes on day 5 and three on day 6; cap 2 removes the third of each.
    assert np.flatnonzero(daily_cap(who, day, kept, 2)).tolist() == [2, 9]
    # A vote already removed takes no place; nobody (-1) is never capped; 0 is no cap.
    kept[0] = False
    assert np.flatnonzero(daily_cap(who, day, kept, 2)).tolist() == [9]
    assert not daily_cap(who, day, np.ones(who.size, dtype=bool), 0).any()
    # Through the pipeline: per voter and per address.
    votes = Votes.of(
        np.zeros(6, dtype=np.int64),
        np.ones(6, dtype=np.int64),
        np.zeros(6, dtype=np.int64),
        ["x", "y"],
        voter=np.array([0, 0, 0, 1, 1, 2]),
        ip=np.array([7, 7, 7, 7, 7, -1]),
        day=np.array([1, 1, 1, 1, 1, 1]),
    )
    kept, removed, _ = run(votes, **{**OFF, "counted_per_day_voter": 2, "counted_per_day_ip": 3})
    assert removed["voter_daily_cap"] == 1 and removed["ip_daily_cap"] == 1
    assert kept.tolist() == [True, True, False, True, False, True]


def test_votes_without_a_voter_are_never_flagged_or_capped() -> None:
    """Imported votes have no voter: 3000 of them on one day, all "A", are not one giant voter."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 3000)
    votes = Votes.of(
        a,
        (a + 1) % 3,
        np.zeros(3000, dtype=np.int64),
        ["x", "y", "z"],
        imported=np.ones(3000, dtype=bool),
    )
    kept, removed, ctx = run(votes, counted_per_day_voter=1, counted_per_day_ip=1, upset_weight=0)
    assert kept.all() and sum(removed.values()) == 0
    assert ctx.review.voters_tested == 0 and ctx.review.upsets == 0


def test_admin_flags_remove_votes() -> None:
    votes = Votes.of(
        np.zeros(4, dtype=np.int64),
        np.ones(4, dtype=np.int64),
        np.zeros(4, dtype=np.int64),
        ["x", "y"],
        voter=np.array([0, 1, 1, -1]),
        flagged=np.array([True, False, False, False]),
        voter_flagged=np.array([False, True, True, False]),
    )
    kept, removed, _ = run(votes)
    assert removed["flagged_battle"] == 1 and removed["flagged_voter"] == 2
    assert kept.tolist() == [False, False, False, True]


def upset_votes() -> Votes:
    """x beats y 90 times to 10: the 10 wins of y are upsets, 5 of them cast by voter 1."""
    outcome = np.array([0] * 90 + [1] * 10)
    voter = np.where(np.arange(100) < 95, 0, 1)
    voter[90:95] = -1  # imported: never upsets
    return Votes.of(
        np.zeros(100, dtype=np.int64),
        np.ones(100, dtype=np.int64),
        outcome,
        ["x", "y"],
        voter=voter,
    )


def test_upsets_are_listed_weighed_or_removed() -> None:
    votes = upset_votes()
    # (One voter cast nearly every vote: the anomaly test, which compares a voter with the
    # others, is off.)
    kept, removed, ctx = run(votes, anomaly_alpha=0)  # weight 1: counted and listed only
    assert kept.all() and removed["upset"] == 0 and ctx.review.weights is None
    assert ctx.review.upsets == 5
    assert ctx.review.upset_voters == [{"voter": "voter-1", "upsets": 5, "votes": 5}]
    kept, removed, ctx = run(votes, anomaly_alpha=0, upset_weight=0.25)
    assert kept.all() and removed["upset"] == 0
    weights = ctx.review.weights
    assert weights is not None and weights.tolist() == [1.0] * 95 + [0.25] * 5
    options = RatingOptions()
    plain = fit_board(votes, kept, False, options, 1)
    weighed = fit_board(votes, kept, False, options, 1, weights)
    gap = [r["rating"] for r in plain["rows"]]
    weighed_gap = [r["rating"] for r in weighed["rows"]]
    assert weighed_gap[0] - weighed_gap[1] > gap[0] - gap[1]  # y's upsets count less
    assert weighed["votes"] == plain["votes"] == 100  # counts stay unweighted
    kept, removed, ctx = run(votes, anomaly_alpha=0, upset_weight=0)
    assert removed["upset"] == 5 and kept.sum() == 95


# -- through the database --------------------------------------------------------------------


@pytest.fixture
def store(database_url: str) -> Store:
    return Store(db.make_engine(database_url))


def _set_time(store: Store, battle_id: str, when: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            db.votes.update().where(db.votes.c.battle_id == battle_id).values(created_at=when)
        )


def _set_ip(store: Store, battle_id: str, ip_hash: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            db.votes.update().where(db.votes.c.battle_id == battle_id).values(ip_hash=ip_hash)
        )


def test_flags_and_caps_in_the_database(store: Store) -> None:
    day1 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    day2 = day1 + timedelta(hours=2)  # after midnight UTC: another day
    config = parse_config(
        registry(
            ratings={
                "anomaly_alpha": 0,
                "counted_per_day_voter": 3,
                "counted_per_day_ip": 4,
                "dedup_top_fraction": 0,
            }
        )
    )
    # v1: four votes on day 1 (the fourth is over the cap), two on day 2.
    v1 = [play(store, "alpha", "beta", Outcome.A, voter="v1", prompt=f"p{k}") for k in range(6)]
    for k, battle in enumerate(v1):
        _set_time(store, battle, (day1 if k < 4 else day2) + timedelta(seconds=k))
    # v2 and v3 share an address: five votes on day 2, the fifth over the address's cap.
    shared = [
        play(store, "gamma", "delta", Outcome.B, voter=f"v{2 + k % 2}", prompt=f"s{k}")
        for k in range(5)
    ]
    for k, battle in enumerate(shared):
        _set_time(store, battle, day2 + timedelta(minutes=k))
        _set_ip(store, battle, "a" * 64)
    # An administrator flags a battle of v4 and the voter v5; a judge called "flagged" is a
    # value, not the flag.
    flagged = play(store, "alpha", "gamma", Outcome.A, voter="v4", prompt="f")
    store.flag_battle(flagged, "bought votes")
    play(store, "beta", "gamma", Outcome.A, voter="v4", prompt="g", flags={"judge": "flagged"})
    for k in range(2):
        play(store, "beta", "delta", Outcome.A, voter="v5", prompt=f"h{k}")
    assert store.flag_voter("v5", "a known rigger")
    # Votes without a voter or address (imported ones have neither): ten on one day.
    for k in range(10):
        battle = str(uuid.uuid4())
        store.create_battle(battle, None, "alpha", "delta", f"i{k}")
        store.finish_turn(battle, 1, {Side.A: answer("alpha", "x"), Side.B: answer("delta", "y")})
        store.record_vote(battle, Outcome.A, None, None)
        _set_time(store, battle, day1)
    result = compute(store.engine, config)
    removed = {s["name"]: s["removed"] for s in result.stages}
    assert removed["flagged_battle"] == 1
    assert removed["flagged_voter"] == 2
    assert removed["voter_daily_cap"] == 1  # v1's fourth vote of day 1 (v2, v3: 3 or fewer)
    assert removed["ip_daily_cap"] == 1
    assert result.votes_counted == result.votes_total - 5


def test_anomalous_voter_is_listed_for_review(store: Store) -> None:
    """Honest voters and one who always votes A, in a real database: the snapshot's `review`
    names that voter, and never an address."""
    rng = np.random.default_rng(7)
    strength = {"alpha": 1.2, "beta": 0.4, "gamma": -0.4, "delta": -1.2}
    rows: list[dict[str, Any]] = []
    voters = [f"honest-{k}" for k in range(12)] + ["rigger"]
    for k in range(12 * 25 + 60):
        voter = voters[min(k // 25, 12)]
        a, b = (str(m) for m in rng.choice(MODELS, size=2, replace=False))
        p = 1 / (1 + np.exp(strength[b] - strength[a]))
        honest = "a" if rng.random() < p else "b"
        rows.append(
            {"voter": voter, "a": a, "b": b, "outcome": "a" if voter == "rigger" else honest}
        )
    rng.shuffle(rows)  # type: ignore[arg-type]
    _insert(store, rows)
    result = compute(store.engine, parse_config(registry()))
    assert result.review["anomalous_voters"] == ["rigger"]
    removed = {s["name"]: s["removed"] for s in result.stages}
    assert removed["anomalous_voter"] == 60
    with store.engine.connect() as conn:
        payload = gzip.decompress(conn.scalar(sa.select(db.snapshots.c.payload).limit(1)))
    review = json.loads(payload)["review"]
    assert review["anomalous_voters"] == ["rigger"] and review["voters_tested"] == 13
    assert "ip-" not in payload.decode()


def _insert(store: Store, rows: list[dict[str, Any]]) -> None:
    """Voted battles straight into the tables (faster than playing each): a voter, an address
    (`ip-<voter>`) and the time now."""
    now = datetime.now(UTC)
    names = sorted({r["voter"] for r in rows})
    with store.engine.begin() as conn:
        conn.execute(
            db.voters.insert(),
            [
                {"id": v, "created_at": now, "last_seen_at": now, "ip_hash": f"ip-{v}"}
                for v in names
            ],
        )
        for k, r in enumerate(rows):
            battle = str(uuid.uuid4())
            conn.execute(
                db.battles.insert().values(
                    id=battle,
                    created_at=now,
                    updated_at=now,
                    voter_id=r["voter"],
                    model_a=r["a"],
                    model_b=r["b"],
                    status="voted",
                    turns=1,
                    flags={},
                    prompt_hash=f"{k:032x}",
                )
            )
            conn.execute(
                db.votes.insert().values(
                    battle_id=battle,
                    outcome=r["outcome"],
                    voter_id=r["voter"],
                    ip_hash=f"ip-{r['voter']}",
                    created_at=now,
                )
            )


def test_simulation_is_reproducible() -> None:
    scenario = replace(SCENARIOS["burst"], honest=300)
    first, second = evaluate(scenario, {"on": {}}), evaluate(scenario, {"on": {}})
    assert first == second
