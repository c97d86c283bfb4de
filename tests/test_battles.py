"""The battle service over real HTTP to the demo server and a real database."""

from __future__ import annotations

import random
from dataclasses import asdict

import httpx
import pytest

from arena import db
from arena.battles import BattleService, BattleView
from arena.config import parse_config
from arena.errors import TurnRejected, VoteRejected
from arena.identity import Identity, Voter
from arena.lifecycle import BattleState, Outcome, Side
from arena.router import Router
from arena.store import Store
from tests.servers import DEMO_MODELS, demo_config_data, free_port


def service(database_url: str, data: dict, seed: int = 0) -> BattleService:
    config = parse_config(data)
    router = Router(config, httpx.AsyncClient(), rng=random.Random(seed))
    store = Store(db.make_engine(database_url))
    identity = Identity(secret_key=b"k" * 32, ip_salt=store.ip_salt())
    return BattleService(store, router, config, identity)


async def play(svc: BattleService, voter: Voter, prompt: str) -> list[BattleView]:
    return [v async for v in svc.start(voter, prompt)]


async def test_battle_to_reveal(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v1", svc.identity.ip_hash("203.0.113.9"))
    views = await play(svc, voter, "What is a monad?")
    final = views[-1]
    assert final.state is BattleState.AWAITING_VOTE
    assert all(t.done and t.content for t in final.a + final.b)
    # Nothing the UI receives before the vote names a model or holds reasoning text.
    battle = svc.store.battle(final.battle_id)
    text = repr([asdict(v) for v in views])
    for name in (battle.model_a, battle.model_b):
        assert name not in text
    assert "The user asks" not in text  # the demo reasoners' reasoning
    async for view in svc.follow_up(final.battle_id, voter, "Say more"):
        final = view
    assert len(final.a) == 2 and final.turns_left == 1
    reveal = await svc.vote(final.battle_id, voter, "b")
    assert {reveal.a.model, reveal.b.model} == {battle.model_a, battle.model_b}
    assert reveal.a.model == battle.model_a and reveal.outcome is Outcome.B
    assert len(reveal.a.reasoning) == 2
    with pytest.raises(VoteRejected):
        await svc.vote(final.battle_id, voter, "a")
    # The voter row keeps a salted hash, never the address.
    with svc.store.engine.connect() as conn:
        row = conn.execute(db.voters.select()).one()
    assert row.ip_hash and "203.0.113.9" not in str(tuple(row))
    ip_hash = svc.identity.ip_hash
    assert row.ip_hash == ip_hash("203.0.113.9") != ip_hash("203.0.113.10")


async def test_reasoning_shows_timer_but_no_text(demo_url: str, sqlite_url: str) -> None:
    data = demo_config_data(demo_url, {"r1": "reasoner", "r2": "thinker"})
    svc = service(sqlite_url, data)
    views = await play(svc, Voter("v"), "Think first")
    final = views[-1]
    for turn in (final.a[0], final.b[0]):
        showed_indicator = turn.thinking_seconds is not None
        assert showed_indicator and not turn.thinking  # an indicator, finished
        assert "The user asks" not in turn.content
    rows = svc.store.messages(final.battle_id)
    stored = [r for r in rows if r["role"] == "assistant"]
    assert all(r["reasoning"].startswith("The user asks") for r in stored)
    assert all(r["reasoning_tokens"] > 0 and r["ttft_ms"] <= r["answer_ms"] for r in stored)


async def test_failed_side(demo_url: str, sqlite_url: str) -> None:
    data = demo_config_data(demo_url, {"good": "terse"})
    data["models"].append(
        {
            "name": "down",
            "endpoints": [{"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "x"}],
        }
    )
    svc = service(sqlite_url, data)
    views = await play(svc, Voter("v"), "hello")
    final = views[-1]
    assert final.state is BattleState.FAILED
    battle = svc.store.battle(final.battle_id)
    bad = Side.A if battle.model_a == "down" else Side.B
    good = Side.B if bad is Side.A else Side.A
    assert final.side(bad)[0].error == "The model server could not be reached."
    assert final.side(good)[0].content and final.side(good)[0].error is None
    with pytest.raises(VoteRejected, match="failed"):
        await svc.vote(final.battle_id, Voter("v"), "a")
    with pytest.raises(TurnRejected):
        async for _ in svc.follow_up(final.battle_id, Voter("v"), "again"):
            pass


async def test_slow_side_does_not_stall_fast_side(
    demo_url: str, slow_demo_url: str, sqlite_url: str
) -> None:
    data = demo_config_data(demo_url, {"fast": "terse"})
    data["models"] += demo_config_data(slow_demo_url, {"slow": "verbose"})["models"]
    svc = service(sqlite_url, data)
    views = await play(svc, Voter("v"), "race")
    battle = svc.store.battle(views[-1].battle_id)
    fast = Side.A if battle.model_a == "fast" else Side.B
    slow = Side.B if fast is Side.A else Side.A
    # Some view shows the fast side finished while the slow one is still streaming.
    assert any(v.side(fast)[0].done and not v.side(slow)[0].done for v in views)


async def test_rejects_bad_input(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url, max_prompt_chars=10))
    with pytest.raises(TurnRejected, match="Type a message"):
        await play(svc, Voter("v"), "   ")
    with pytest.raises(TurnRejected, match="too long"):
        await play(svc, Voter("v"), "x" * 11)
    views = await play(svc, Voter("v"), "hi")
    with pytest.raises(VoteRejected, match="Unknown vote"):
        await svc.vote(views[-1].battle_id, Voter("v"), "maybe")
    with pytest.raises(VoteRejected, match="another session"):
        await svc.vote(views[-1].battle_id, Voter("someone else"), "a")


def test_pairs_are_distinct_weighted_and_unbiased(demo_url: str) -> None:
    data = demo_config_data(demo_url, DEMO_MODELS)
    data["models"][0]["weight"] = 3.0
    data["models"][1]["weight"] = 0
    config = parse_config(data)
    router = Router(config, httpx.AsyncClient(), rng=random.Random(1))
    counts: dict[str, int] = {}
    left: dict[str, int] = {}
    for _ in range(4000):
        a, b = router.pick_pair()
        assert a.name != b.name and "demo-verbose" not in (a.name, b.name)
        for m in (a, b):
            counts[m.name] = counts.get(m.name, 0) + 1
        left[a.name] = left.get(a.name, 0) + 1
    assert counts["demo-terse"] > 1.5 * counts["demo-reasoner"]
    # Position is a coin flip for every model.
    for name, n in counts.items():
        assert abs(left[name] / n - 0.5) < 0.05


async def test_nul_in_prompt_is_dropped(demo_url: str, database_url: str) -> None:
    # PostgreSQL refuses NUL in text; the battle must not fail after both sides answered.
    svc = service(database_url, demo_config_data(demo_url))
    views = await play(svc, Voter("v"), "null\x00byte")
    assert views[-1].state is BattleState.AWAITING_VOTE
    assert views[-1].a[0].prompt == "nullbyte"


async def test_answer_naming_its_model_flags_the_battle(demo_url: str, sqlite_url: str) -> None:
    # demo-chatty names itself now and then; the battle is flagged, not blocked.
    data = demo_config_data(demo_url, {"demo-chatty": "chatty", "demo-terse": "terse"})
    data["models"][0]["organization"] = "Arena Demo Lab"
    svc = service(sqlite_url, data)
    flagged = clean = 0
    for i in range(12):
        views = await play(svc, Voter(f"v{i}"), f"question number {i}")
        battle = svc.store.battle(views[-1].battle_id)
        chatty = Side.A if battle.model_a == "demo-chatty" else Side.B
        said = "demo-chatty" in views[-1].side(chatty)[0].content
        assert battle.flags.get("identity_leak") == ([chatty.value] if said else None)
        flagged, clean = flagged + said, clean + (not said)
        assert battle.status is BattleState.AWAITING_VOTE
    assert flagged and clean  # both cases were exercised


async def test_sweep_never_cuts_a_stream_that_may_still_run(demo_url: str, sqlite_url: str) -> None:
    from datetime import timedelta

    from arena.store import now

    # abandon_after is tiny, but the total timeout (30 s) keeps a floor of 1.5 minutes.
    svc = service(sqlite_url, demo_config_data(demo_url, abandon_after_minutes=0.01))
    ids = [(await play(svc, Voter("v"), "q"))[-1].battle_id for _ in range(2)]
    with svc.store.engine.begin() as conn:
        for battle_id, minutes in zip(ids, (1, 2), strict=True):
            conn.execute(
                db.battles.update()
                .where(db.battles.c.id == battle_id)
                .values(updated_at=now() - timedelta(minutes=minutes))
            )
    assert await svc.sweep() == 1
    assert [svc.store.battle(b).status for b in ids] == [
        BattleState.AWAITING_VOTE,
        BattleState.ABANDONED,
    ]


async def test_follow_up_after_a_model_left_the_registry(demo_url: str, sqlite_url: str) -> None:
    """Regression (issue 6): this raised a bare KeyError and left the battle in `answering`."""
    data = demo_config_data(demo_url, {"stays": "terse", "leaves": "verbose", "other": "terse"})
    svc = service(sqlite_url, data)
    voter = Voter("v")
    views = await play(svc, voter, "first question")
    battle = svc.store.battle(views[-1].battle_id)
    gone = battle.model_a if battle.model_a != "stays" else battle.model_b
    # The registry is reloaded without one of the two models (a restart with a new file).
    data["models"] = [m for m in data["models"] if m["name"] != gone]
    restarted = service(sqlite_url, data)
    with pytest.raises(TurnRejected, match="not available right now"):
        async for _ in restarted.follow_up(battle.id, voter, "and then?"):
            pass
    assert restarted.store.battle(battle.id).status is BattleState.AWAITING_VOTE
    reveal = await restarted.vote(battle.id, voter, "a")  # the answers so far still count
    assert gone in (reveal.a.model, reveal.b.model)


async def test_battles_are_tagged_when_stored(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v")
    views = await play(svc, voter, "Write a Python function that parses ISO dates")
    battle = svc.store.battle(views[-1].battle_id)
    assert "coding" in battle.categories and "multi_turn" not in battle.categories
    async for _ in svc.follow_up(battle.id, voter, "Now add tests please"):
        pass
    again = svc.store.battle(battle.id)
    assert {"coding", "multi_turn"} <= set(again.categories)
    with svc.store.engine.connect() as conn:
        row = conn.execute(db.battles.select().where(db.battles.c.id == battle.id)).one()
    assert row.language == "en" and row.prompt_hash and row.tokens_a and row.tokens_b
    assert row.length_a is not None and row.bold_a is not None


async def test_backfill_tags_old_battles(demo_url: str, sqlite_url: str) -> None:
    from arena.categories import RuleTagger

    svc = service(sqlite_url, demo_config_data(demo_url))
    views = await play(svc, Voter("v"), "Prove that the square root of 2 is irrational")
    battle_id = views[-1].battle_id
    with svc.store.engine.begin() as conn:  # as stored before categories existed
        conn.execute(db.battles.update().values(categories=None, language=None, prompt_hash=None))
    assert svc.store.backfill_categories(RuleTagger()) == 1
    assert "math" in svc.store.battle(battle_id).categories
    assert svc.store.backfill_categories(RuleTagger()) == 0  # only untagged ones by default
    assert svc.store.backfill_categories(RuleTagger(), only_missing=False) == 1


async def test_a_server_error_is_stored_for_the_operator_and_never_shown(
    demo_url: str, sqlite_url: str
) -> None:
    # The demo server answers max_tokens = 0 with HTTP 400 and its reason in the body.
    data = demo_config_data(demo_url, {"refuses": "terse", "answers": "verbose"})
    data["models"][0]["params"] = {"max_tokens": 0}
    svc = service(sqlite_url, data)
    final = (await play(svc, Voter("v1", None), "Hello"))[-1]
    assert final.state is BattleState.FAILED
    shown = repr(final)
    assert "rejected the request (HTTP 400)" in shown
    assert "max_tokens must be a positive integer" not in shown
    with svc.store.engine.connect() as conn:
        row = conn.execute(db.messages.select().where(db.messages.c.model == "refuses")).one()
    assert row.error == "The model server rejected the request (HTTP 400)."
    assert row.error_detail == "max_tokens must be a positive integer"


def test_reasoning_that_is_only_whitespace_shows_no_thinking_line() -> None:
    from arena.battles import SideProgress
    from arena.providers.base import Chunk
    from arena.ui.battle import chat_messages

    side = SideProgress(model="m", prompt="p")
    side.apply(Chunk(reasoning="\n\n"))
    side.apply(Chunk(content="Answer."))
    side.finish()
    shown = repr(chat_messages((side.view(),)))  # what the page gets for this turn
    assert "Thought for" not in shown and "Thinking" not in shown and "Answer." in shown
    assert side.answer().reasoning == "\n\n"  # stored exactly as sent


async def test_no_models_up_costs_no_quota_and_a_down_model_takes_no_follow_up(
    sqlite_url: str,
) -> None:
    # Review of issue 7: "Fewer than two models" used to count against the voter's prompt
    # limit, and a follow-up to a model known to be down failed the battle, votable before.
    from arena.demo_models import create_demo_app
    from arena.errors import NotEnoughModels
    from arena.providers.pool import check
    from tests.servers import serve

    port = free_port()
    data = demo_config_data(f"http://127.0.0.1:{port}", {"one": "terse", "two": "verbose"})
    data["limits"] = {**data["limits"], "prompts_per_minute_voter": 1}
    svc = service(sqlite_url, data)
    router, voter = svc.router, Voter("v")

    async def check_all() -> None:
        for r in router.replicas():
            await check(router.client, r, router.config.routing)

    await check_all()  # nothing listens on the port yet
    for _ in range(3):
        with pytest.raises(NotEnoughModels):
            await play(svc, voter, "hello")
    with serve(create_demo_app(latency=0, tokens_per_second=0), "/health", port):
        await check_all()
        views = await play(svc, voter, "hello")  # the one prompt of the minute: not used up
        assert views[-1].state is BattleState.AWAITING_VOTE
    await check_all()  # the server is gone again
    with pytest.raises(TurnRejected, match="not available right now"):
        async for _ in svc.follow_up(views[-1].battle_id, voter, "and then?"):
            pass
    assert svc.store.battle(views[-1].battle_id).status is BattleState.AWAITING_VOTE
