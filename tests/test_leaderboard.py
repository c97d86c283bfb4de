"""The ratings job: votes in a real database become snapshots, stage by stage."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from arena import db
from arena.answer import Answer, Usage
from arena.categories import Tags
from arena.config import parse_config
from arena.errors import SnapshotError
from arena.leaderboard import SnapshotReader, model_cards, public_rows
from arena.lifecycle import Outcome, Side
from arena.ratings_job import STAGES, compute, dedup_prompts
from arena.store import Store

MODELS = ("alpha", "beta", "gamma", "delta")


def registry(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "arena": {"demo": False},
        "ratings": {"interval_minutes": 0},
        "leaderboard": {"min_votes": 5},
        "models": [
            {"name": name, "organization": f"{name.title()} Lab", "endpoints": [ep(name)]}
            for name in MODELS
        ],
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def ep(model: str) -> dict[str, str]:
    return {"base_url": "http://127.0.0.1:9/v1", "model": f"real/{model}-weights"}


def answer(model: str, text: str, tokens: int = 10) -> Answer:
    return Answer(model=model, content=text, usage=Usage(completion_tokens=tokens))


def play(
    store: Store,
    a: str,
    b: str,
    outcome: Outcome | None,
    *,
    prompt: str = "hello",
    flags: dict[str, Any] | None = None,
    tags: Tags | None = None,
    text_a: str = "answer",
    text_b: str = "answer",
    voter: str = "v1",
) -> str:
    """A battle through the store's real calls: create, answer, and vote unless `outcome` is
    None."""
    battle_id = str(uuid.uuid4())
    store.touch_voter(voter, None)
    store.create_battle(battle_id, voter, a, b, prompt, flags, tags)
    store.finish_turn(battle_id, 1, {Side.A: answer(a, text_a), Side.B: answer(b, text_b)})
    if outcome is not None:
        store.record_vote(battle_id, outcome, voter, None)
    return battle_id


@pytest.fixture
def store(database_url: str) -> Store:
    return Store(db.make_engine(database_url))


def snapshots(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(db.snapshots).order_by(db.snapshots.c.id)).all()
    return [json.loads(gzip.decompress(r.payload)) for r in rows]


def board(store: Store, category: str = "overall", style: bool = False) -> dict[str, Any]:
    runs = [s for s in snapshots(store) if s["category"] == category]
    return [s for s in runs if s["style_control"] == style][-1]


def test_ratings_follow_the_votes(store: Store) -> None:
    # One voter casts all 240 votes today: no daily cap (docs/security.md).
    config = parse_config(registry(ratings={"counted_per_day_voter": 0}))
    rng = np.random.default_rng(1)
    strength = {"alpha": 1.0, "beta": 0.3, "gamma": -0.3, "delta": -1.0}
    for k in range(240):
        a, b = rng.choice(MODELS, size=2, replace=False)
        p = 1 / (1 + np.exp(strength[b] - strength[a]))
        outcome = Outcome.A if rng.random() < p else Outcome.B
        play(store, str(a), str(b), outcome, prompt=f"question {k}")
    result = compute(store.engine, config)
    assert result.run_id and result.votes_counted == 240 == result.votes_total
    overall = board(store)
    assert [r["model"] for r in overall["rows"]] == ["alpha", "beta", "gamma", "delta"]
    top = overall["rows"][0]
    assert top["lower"] < top["rating"] < top["upper"] and top["rank_ub"] == 1
    assert all(r["rank_ub"] <= r["rank_lb"] for r in overall["rows"])
    assert sum(r["votes"] for r in overall["rows"]) == 2 * 240
    assert overall["rows"][0]["median_tokens"] == 10.0
    assert overall["params"]["options"] == config.rating_options.to_dict()
    assert overall["position"] is not None and overall["position"]["coef"] is not None
    n = len(overall["models"])
    assert np.array(overall["matrices"]["battles"]).shape == (n, n)
    assert np.allclose(np.diag(np.array(overall["matrices"]["battles"])), 0)
    # The style board has the style coefficients, the plain one not.
    assert board(store, style=True)["style"]["length"]["coef"] is not None
    assert overall["style"] is None
    # Nothing new: the next run writes nothing; --force writes a new run.
    assert compute(store.engine, config).run_id is None
    assert compute(store.engine, config, force=True).run_id not in (None, result.run_id)


def test_stages_remove_what_they_say(store: Store) -> None:
    config = parse_config(registry(ratings={"dedup_top_fraction": 0.5, "dedup_max_per_prompt": 2}))
    plain = [play(store, "alpha", "beta", Outcome.A, prompt=f"p{k}") for k in range(6)]
    play(store, "alpha", "beta", Outcome.B, flags={"identity_leak": ["a"]})
    play(store, "gamma", "beta", Outcome.B, flags={"demo": True}, prompt="demo one")
    failed = play(store, "gamma", "delta", Outcome.TIE, prompt="legacy")
    for _ in range(5):  # one prompt asked five times: two count
        play(store, "alpha", "delta", Outcome.A, prompt="  Hello   there!! ")
    unvoted = play(store, "alpha", "gamma", None, prompt="never voted")
    play(store, "ghost", "beta", Outcome.A, prompt="a model no registry lists")
    # A vote on a battle that did not end cleanly (rows from before the vote rules, or
    # edited by hand): the pipeline must drop it whatever its origin.
    with store.engine.begin() as conn:
        conn.execute(db.battles.update().where(db.battles.c.id == failed).values(status="failed"))
    result = compute(store.engine, config)
    removed = {s["name"]: s["removed"] for s in result.stages}
    assert removed == {
        "not_anonymous": 0,
        "unfinished": 1,
        "identity_leak": 1,
        "demo": 1,
        "imported": 0,
        "hidden_model": 1,
        "flagged_battle": 0,
        "flagged_voter": 0,
        "prompt_dedup": 3,
        "voter_daily_cap": 0,
        "ip_daily_cap": 0,
        "anomalous_voter": 0,
        "upset": 0,
    }
    assert [name for name, _ in STAGES] == list(removed)
    assert result.votes_total == 6 + 1 + 1 + 1 + 5 + 1
    assert result.votes_counted + sum(removed.values()) == result.votes_total
    assert result.votes_counted == 6 + 2
    assert board(store)["stages"] == result.stages
    assert plain and unvoted  # the unvoted battle is not a vote at all
    # In demo mode demo battles count.
    demo = parse_config(registry(arena={"demo": True}, ratings={"dedup_top_fraction": 0.0}))
    again = compute(store.engine, demo, force=True)
    assert {s["name"]: s["removed"] for s in again.stages}["demo"] == 0


def test_dedup_keeps_earliest_votes_of_top_prompts() -> None:
    prompt = np.array([0, 1, 0, 2, 0, 0, 1, 3, -1, -1, -1])
    kept = np.ones(prompt.size, dtype=bool)
    kept[5] = False  # already removed by an earlier stage: not counted again
    remove = dedup_prompts(prompt, kept, top_fraction=0.25, max_per_prompt=2)
    # Four distinct prompts: the top 25% is prompt 0 alone (3 kept votes), capped at 2.
    assert np.flatnonzero(remove).tolist() == [4]
    assert not dedup_prompts(prompt, kept, 0.0, 1).any()
    assert not dedup_prompts(prompt, kept, 1.0, 5).any()
    # Unknown prompts (-1) are never removed, however many.
    assert not dedup_prompts(np.full(9, -1), np.ones(9, dtype=bool), 1.0, 1).any()


def test_categories_get_their_own_boards(store: Store) -> None:
    config = parse_config(registry(ratings={"language_min_votes": 3}))
    code = Tags(frozenset({"coding"}), "en")
    for k in range(4):
        play(store, "alpha", "beta", Outcome.A, prompt=f"code {k}", tags=code)
    for k in range(2):
        play(store, "gamma", "beta", Outcome.B, prompt=f"hola {k}", tags=Tags(frozenset(), "es"))
    compute(store.engine, config)
    names = board(store)["categories"]
    assert names == ["overall", "coding", "math", "long", "multi_turn", "hard", "language:en"]
    assert board(store, "coding")["votes"] == 4
    assert {r["model"] for r in board(store, "coding")["rows"]} == {"alpha", "beta"}
    assert board(store, "math")["rows"] == []
    assert board(store, "language:en")["votes"] == 4  # Spanish has 2 < 3 votes: no board


def test_failed_run_leaves_the_last_snapshot(store: Store) -> None:
    config = parse_config(registry())
    for _ in range(3):
        play(store, "alpha", "beta", Outcome.A)
    compute(store.engine, config)
    before = snapshots(store)
    reader = SnapshotReader(store.engine)
    served = reader.latest()
    play(store, "gamma", "beta", Outcome.A)
    with pytest.raises(SnapshotError):
        compute(store.engine, config, fail_after=3)
    assert snapshots(store) == before  # nothing of the failed run is visible
    fresh = SnapshotReader(store.engine).latest()
    assert served is not None and fresh is not None and fresh.id == served.id


def test_unreleased_models_are_hidden_and_ranks_close_the_gap(store: Store) -> None:
    data = registry()
    data["models"][0]["unreleased"] = True  # alpha, the strongest, is a secret
    data["models"][3]["retired"] = True
    config = parse_config(data)
    for k in range(20):
        play(store, "alpha", "beta", Outcome.A, prompt=f"a{k}")
        play(store, "alpha", "gamma", Outcome.A, prompt=f"b{k}")
        play(store, "beta", "gamma", Outcome.A, prompt=f"c{k}")
        play(store, "gamma", "delta", Outcome.A, prompt=f"d{k}")
    compute(store.engine, config)
    snap = SnapshotReader(store.engine).latest()
    assert snap is not None
    # Left out of the fit itself, not only of the table: the mean rating and the vote counts
    # would otherwise give it away.
    assert "alpha" not in json.dumps(snap.payload) and snap.payload["votes"] == 40
    assert np.mean([r["rating"] for r in snap.payload["rows"]]) == pytest.approx(1000, abs=0.1)
    cards = model_cards(config, {})
    rows = public_rows(snap, config, cards)
    assert [r["model"] for r in rows] == ["beta", "gamma"]
    assert rows[0]["rank_ub"] == 1  # not 2: the hidden model leaves no gap
    # Released, it enters the next run without any new vote.
    data["models"][0]["unreleased"] = False
    assert compute(store.engine, parse_config(data)).run_id is not None
    released = SnapshotReader(store.engine).latest()
    assert released is not None and released.payload["rows"][0]["model"] == "alpha"
    shown = public_rows(snap, config, cards, show_deprecated=True)
    assert [r["model"] for r in shown] == ["beta", "gamma", "delta"]
    assert shown[-1]["deprecated"] and "alpha" not in json.dumps(shown)


def _lease_script(url: str, config_path: Path) -> str:
    return textwrap.dedent(
        f"""
        import asyncio, sys
        from arena import db
        from arena.config import load_config
        from arena.jobs import Job, Jobs
        from arena.ratings_job import compute

        engine = db.make_engine({url!r})
        config = load_config(__import__("pathlib").Path({str(config_path)!r}))

        async def run():
            await asyncio.to_thread(compute, engine, config, force=True)

        jobs = Jobs(engine, [Job("ratings", 3600, run, ttl=600)])
        ran = asyncio.run(jobs.run_once(jobs.jobs[0]))
        print("ran" if ran else "skipped")
        """
    )


def test_two_processes_run_the_job_once(store: Store, database_url: str, tmp_path: Path) -> None:
    from tests.servers import write_config

    for _ in range(3):
        play(store, "alpha", "beta", Outcome.A)
    path = write_config(tmp_path, registry())
    script = _lease_script(database_url, path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    said = sorted(out.decode().strip() for out, _ in outputs)
    assert said == ["ran", "skipped"], [err.decode()[-500:] for _, err in outputs]
    assert len({s["run_id"] for s in snapshots(store)}) == 1


def test_lease_is_taken_over_when_it_expires(store: Store) -> None:
    from datetime import timedelta

    from arena.jobs import Lease

    first = Lease(store.engine, "job", "one", timedelta(seconds=-1))  # already expired
    second = Lease(store.engine, "job", "two", timedelta(minutes=5))
    assert first.acquire()
    assert second.acquire()  # the first holder died: its lease ran out
    assert not first.acquire() and (second.holder_now() or ("",))[0] == "two"
    second.release()
    assert not second.acquire(every=timedelta(minutes=1))  # just finished: not due
    assert second.acquire(every=timedelta(0))


def test_serve_runs_the_job_in_a_child_process(arena_server, demo_url: str, sqlite_url: str):  # type: ignore[no-untyped-def]
    """Inside `arena serve` the job runs on its own every interval, in a child process."""
    import time

    import httpx

    from tests.servers import demo_config_data

    data = demo_config_data(demo_url, {"one": "terse", "two": "verbose"})
    data["ratings"] = {"interval_minutes": 0.02}
    store = Store(db.make_engine(sqlite_url))
    play(store, "one", "two", Outcome.A)
    url, _ = arena_server(data)
    deadline = time.monotonic() + 60
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = httpx.get(url + "/healthz").json()
        if health["snapshot"]:
            break
        time.sleep(0.5)
    assert health["snapshot"], health
    rows = httpx.get(url + "/api/v1/leaderboard").json()["rows"]
    assert {r["model"] for r in rows} == {"one", "two"}
    # The parent held the lease while the child ran, and gives it back when the child ends.
    finished = None
    while finished is None and time.monotonic() < deadline:
        with store.engine.connect() as conn:
            finished = conn.scalar(
                sa.select(db.leases.c.finished_at).where(db.leases.c.name == "ratings")
            )
        time.sleep(0.2)
    assert finished is not None


async def test_a_long_run_keeps_its_lease(store: Store) -> None:
    """The lease is renewed while the job runs, so a run longer than the ttl is not joined by a
    second one."""
    import asyncio
    from datetime import timedelta

    from arena.jobs import Job, Jobs, Lease

    other = Lease(store.engine, "slow", "other", timedelta(seconds=5))
    seen: list[bool] = []

    async def slow() -> None:
        for _ in range(6):  # 1.2 s, four times the ttl
            await asyncio.sleep(0.2)
            seen.append(await asyncio.to_thread(other.acquire))

    jobs = Jobs(store.engine, [Job("slow", 60, slow, ttl=0.3)], holder="me")
    assert await jobs.run_once(jobs.jobs[0])
    assert seen == [False] * 6
    assert other.acquire()  # released at the end


def test_an_administrators_flag_brings_a_new_run(store: Store) -> None:
    """A flag changes which votes count without a new vote: the next run must not skip."""
    config = parse_config(registry())
    ids = [play(store, "alpha", "beta", Outcome.A) for _ in range(3)]
    assert compute(store.engine, config).run_id is not None
    assert compute(store.engine, config).run_id is None  # nothing new
    store.flag_battle(ids[0], "spam")
    again = compute(store.engine, config)
    assert again.run_id is not None
    counts = {s["name"]: s["removed"] for s in snapshots(store)[-1]["stages"]}
    assert counts["flagged_battle"] == 1


def test_compute_counts_every_sample_and_draws_families(store: Store) -> None:
    # alpha answers once (10 tokens); beta is alpha's best-of-4 variant: four samples of 10 and
    # four reward calls of 30 tokens each (issue 7): 160 tokens an answer.
    from arena.leaderboard import SnapshotReader
    from arena.leaderboard import rated_models as load_rated_models
    from arena.ui.leaderboard import compute_figure

    data = registry(ratings={"counted_per_day_voter": 0})
    data["models"][0]["family"] = data["models"][1]["family"] = "alpha-family"
    config = parse_config(data)
    best_of_4 = Usage(
        prompt_tokens=20, completion_tokens=40, samples=4, reward_calls=4, reward_tokens=120
    )
    for k in range(30):
        battle_id = str(uuid.uuid4())
        store.touch_voter("v1", None)
        store.create_battle(battle_id, "v1", "alpha", "beta", f"question {k}")
        strategy = Answer(model="beta", content="four samples, one kept", usage=best_of_4)
        store.finish_turn(battle_id, 1, {Side.A: answer("alpha", "one"), Side.B: strategy})
        store.record_vote(battle_id, Outcome.B if k % 3 else Outcome.A, "v1", None)
        play(store, "gamma", "delta", Outcome.A, prompt=f"other {k}")
    compute(store.engine, config)
    snap = SnapshotReader(store.engine).latest("overall", False)
    assert snap is not None
    cards = model_cards(config, load_rated_models(store.engine))
    rows = {r["model"]: r for r in public_rows(snap, config, cards)}
    assert rows["alpha"]["mean_tokens"] == 10.0 and rows["beta"]["mean_tokens"] == 160.0
    assert rows["alpha"]["family"] == rows["beta"]["family"] == "alpha-family"
    assert rows["gamma"]["family"] == "gamma"
    figure = compute_figure(list(rows.values()))
    lines = {t.name: list(t.x) for t in figure.data}
    # One curve for the family, cheapest variant first; the others stand alone.
    assert lines["alpha-family"] == [10.0, 160.0]
    assert lines["gamma"] == [10.0] and lines["delta"] == [10.0]
    assert [t.mode for t in figure.data if t.name == "alpha-family"] == ["lines+markers+text"]
