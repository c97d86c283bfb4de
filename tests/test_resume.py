"""A reloaded page gets its battle back, a double click votes once, and a cut-short answer is
told apart (issue 9), through the battle service over the demo server and a real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from arena import battles as battles_module
from arena import db
from arena.battles import ENDED, LOST, RESUMED, RESUMED_NO_TURNS
from arena.errors import VoteRejected
from arena.identity import Voter
from arena.lifecycle import BattleState, Outcome
from tests.servers import demo_config_data
from tests.test_battles import play, service


async def test_an_unvoted_battle_comes_back_to_its_voter_only(
    demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v1", None)
    final = (await play(svc, voter, "What is a monad?"))[-1]
    assert await svc.resume(Voter("v2", None)) is None  # another voter's cookie gets nothing
    back = await svc.resume(voter)
    assert back is not None and back.view is not None and back.notice == RESUMED
    assert back.view.battle_id == final.battle_id
    assert back.view.state is BattleState.AWAITING_VOTE
    assert [t.content for t in back.view.a] == [t.content for t in final.a]
    assert [t.prompt for t in back.view.b] == ["What is a monad?"]
    assert back.view.turns_left == final.turns_left == 2
    # The view carries no name: it is what the page showed before the reload.
    battle = svc.store.battle(final.battle_id)
    assert battle.model_a not in repr(back.view) and battle.model_b not in repr(back.view)
    # The vote still works, and another voter cannot cast it.
    with pytest.raises(VoteRejected, match="another session"):
        await svc.vote(final.battle_id, Voter("v2", None), Outcome.A)
    reveal = await svc.vote(final.battle_id, voter, Outcome.A)
    assert reveal.a.model == battle.model_a
    assert await svc.resume(voter) is None  # voted: nothing to give back


async def test_a_battle_with_no_follow_ups_left_comes_back_to_be_voted(
    demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url, max_turns=1))
    voter = Voter("v1", None)
    await play(svc, voter, "Hi")
    back = await svc.resume(voter)
    assert back is not None and back.view is not None
    assert back.view.turns_left == 0 and back.notice == RESUMED_NO_TURNS


async def test_a_battle_cut_off_mid_answer_is_told_as_lost(
    slow_demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    voter = Voter("v1", None)
    stream = svc.start(voter, "Tell me a long story")
    await anext(stream)  # answering
    await stream.aclose()  # the page went away: the battle is abandoned mid-answer
    back = await svc.resume(voter)
    assert back is not None and back.view is None and back.notice == LOST
    # An old cut-off battle is old news: the page starts empty.
    with svc.store.engine.begin() as conn:
        conn.execute(db.battles.update().values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
    assert await svc.resume(voter) is None


def _mark_answering(svc, battle_id: str) -> None:  # type: ignore[no-untyped-def]
    """A battle left `answering`, as when its process died mid-stream."""
    with svc.store.engine.begin() as conn:
        conn.execute(
            db.battles.update()
            .where(db.battles.c.id == battle_id)
            .values(status=BattleState.ANSWERING.value)
        )


async def _waiting_on(svc, voter: Voter, prompt: str):  # type: ignore[no-untyped-def]
    """A battle still answering (the other tab's), and a reloaded page's lookup of it, once
    the lookup has begun to wait: (its stream, its first view, the lookup task)."""
    stream = svc.start(voter, prompt)
    first = await anext(stream)
    waiting = asyncio.Event()
    lookup = asyncio.create_task(svc.resume(voter, waiting))
    await asyncio.wait_for(waiting.wait(), 10)  # the page can say it waits, meanwhile
    return stream, first, lookup


async def test_a_battle_still_answering_is_waited_for(
    slow_demo_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    voter = Voter("v1", None)
    views = svc.start(voter, "Tell me a story")
    first = await anext(views)

    async def finish() -> None:
        async for _ in views:
            pass

    streaming = asyncio.create_task(finish())  # the old page's stream, still running
    back = await svc.resume(voter)  # waits for it to finish
    await streaming
    assert back is not None and back.view is not None
    assert back.view.battle_id == first.battle_id
    # A stream that never finishes (its process died) is reported lost once the wait is over.
    monkeypatch.setattr(battles_module, "RESUME_WAIT_SECONDS", 0.0)
    stuck = [v async for v in svc.start(voter, "And another")][-1]
    _mark_answering(svc, stuck.battle_id)
    lost = await svc.resume(voter)
    assert lost is not None and lost.view is None and lost.notice == LOST


async def test_a_double_click_votes_once(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v1", None)
    final = (await play(svc, voter, "Hi"))[-1]
    first, again = await asyncio.gather(
        svc.vote(final.battle_id, voter, Outcome.B), svc.vote(final.battle_id, voter, Outcome.B)
    )
    assert first == again and first.outcome is Outcome.B
    with pytest.raises(VoteRejected, match="already has a vote"):
        await svc.vote(final.battle_id, voter, Outcome.A)  # a different vote is refused
    with svc.store.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(db.votes)) == 1


async def test_an_answer_cut_short_by_its_token_limit_is_stored_and_revealed_as_such(
    demo_url: str, sqlite_url: str
) -> None:
    data = demo_config_data(demo_url, {"short": "verbose", "full": "terse"})
    data["models"][0]["params"] = {"max_tokens": 12}
    svc = service(sqlite_url, data)
    voter = Voter("v1", None)
    final = (await play(svc, voter, "Explain tides"))[-1]
    battle = svc.store.battle(final.battle_id)
    reveal = await svc.vote(final.battle_id, voter, Outcome.TIE)
    short = reveal.a if battle.model_a == "short" else reveal.b
    full = reveal.b if short is reveal.a else reveal.a
    assert short.cut_short == (True,) and full.cut_short == (False,)
    with svc.store.engine.connect() as conn:
        reasons = dict(
            conn.execute(
                sa.select(db.messages.c.model, db.messages.c.finish_reason).where(
                    db.messages.c.role == "assistant"
                )
            ).all()
        )
    assert reasons == {"short": "length", "full": "stop"}


async def test_new_battle_stops_a_streaming_battle_without_touching_the_next(
    slow_demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    voter = Voter("v1", None)
    stream = svc.start(voter, "Tell me a long story")
    first = await anext(stream)
    await svc.abandon(first.battle_id)  # New battle, while both sides stream
    rest = [view async for view in stream]
    # The stream ends with a view that tells the page to change nothing (Gradio repeats a
    # stream's last update as it ends, which must not repaint the old battle).
    assert rest[-1].state is BattleState.ABANDONED
    assert all(view.state is BattleState.ANSWERING for view in rest[:-1])
    assert svc.store.battle(first.battle_id).status is BattleState.ABANDONED
    assert await svc.resume(voter) is None  # closed by its voter: a reload has nothing to say
    second = (await play(svc, voter, "Another"))[-1]  # the next battle is untouched
    assert second.state is BattleState.AWAITING_VOTE


async def test_a_vote_on_turns_the_voter_has_not_seen_is_refused(
    demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v1", None)
    first = (await play(svc, voter, "One"))[-1]
    async for _ in svc.follow_up(first.battle_id, voter, "Two"):  # from another tab
        pass
    with pytest.raises(VoteRejected, match="changed in another tab"):
        await svc.vote(first.battle_id, voter, Outcome.A, seen_turns=1)
    state, now, reveal = await svc.as_stored(first.battle_id, voter)
    assert state is BattleState.AWAITING_VOTE and reveal is None
    assert now is not None and [t.prompt for t in now.a] == ["One", "Two"]
    assert await svc.as_stored(first.battle_id, Voter("v2", None)) == (state, None, None)
    await svc.vote(first.battle_id, voter, Outcome.A, seen_turns=2)
    state, now, reveal = await svc.as_stored(first.battle_id, voter)
    assert state is BattleState.VOTED and reveal is not None and reveal.outcome is Outcome.A
    assert await svc.as_stored(first.battle_id, Voter("v2", None)) == (state, None, None)


async def test_a_page_loaded_before_a_battle_does_not_take_it_as_its_own(
    demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v1", None)
    loaded = datetime.now(UTC)
    await play(svc, voter, "Begun after the page loaded")
    since = loaded - timedelta(hours=1)
    assert svc.store.latest_battle(voter.id, since, loaded) is None
    assert svc.store.latest_battle(voter.id, since) is not None


async def test_a_battle_closed_elsewhere_is_not_taken_for_a_new_battle_press(
    slow_demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    stream = svc.start(Voter("v1", None), "A story")
    first = await anext(stream)
    svc.store.abandon(first.battle_id)  # another tab's New battle, or the orphan sweep
    rest = [view async for view in stream]
    assert rest[-1].state is BattleState.ABANDONED
    assert not svc.stopping(first.battle_id)  # so the page says it was closed, not "nothing"


async def test_a_slow_heartbeat_setting_never_orphans_live_battles(
    demo_url: str, sqlite_url: str
) -> None:
    svc = service(
        sqlite_url, demo_config_data(demo_url, heartbeat_seconds=60, owner_gone_seconds=30)
    )
    svc.store.heartbeat("live")
    svc.store.create_battle("b1", None, "m1", "m2", "hi", owner="live")
    with svc.store.engine.begin() as conn:  # last beat 40 s ago: one beat late, not three
        conn.execute(
            db.instances.update().values(seen_at=datetime.now(UTC) - timedelta(seconds=40))
        )
    assert await svc.abandon_orphans() == 0
    with svc.store.engine.begin() as conn:
        conn.execute(
            db.instances.update().values(seen_at=datetime.now(UTC) - timedelta(seconds=200))
        )
    assert await svc.abandon_orphans() == 1


async def test_a_page_that_began_its_own_battle_while_waiting_keeps_it(
    slow_demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    voter = Voter("v1", None)
    old = svc.start(voter, "The old page's battle")
    await anext(old)  # still answering, as the page reloads
    waiting = asyncio.create_task(svc.resume(voter))
    await asyncio.sleep(1.0)  # the reloaded page waits for it
    await play(svc, voter, "The new page's own battle")  # and meanwhile starts its own
    async for _ in old:  # the old battle finishes
        pass
    assert await waiting is None  # the page's own battle stays on screen


async def test_the_page_is_told_when_a_wait_begins_and_how_it_ended(
    slow_demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    voter = Voter("v1", None)
    waiting = asyncio.Event()
    assert await svc.resume(voter, waiting) is None and not waiting.is_set()  # nothing to wait for
    old, first, lookup = await _waiting_on(svc, voter, "The old page's battle")
    assert not lookup.done()
    async for _ in old:  # the battle finishes in the other tab, and is voted there
        pass
    await svc.vote(first.battle_id, voter, Outcome.A, seen_turns=1)
    ended = await lookup
    assert ended is not None and ended.view is None and ended.notice == ENDED


async def test_a_page_that_began_its_own_battle_while_waiting_in_vain_keeps_it(
    demo_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(battles_module, "RESUME_WAIT_SECONDS", 1.0)
    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v1", None)
    stuck = [v async for v in svc.start(voter, "Cut off when its process died")][-1]
    _mark_answering(svc, stuck.battle_id)
    waiting = asyncio.Event()
    lookup = asyncio.create_task(svc.resume(voter, waiting))
    await waiting.wait()
    await play(svc, voter, "The new page's own battle")
    # The wait runs out with the old battle still answering; the page's own battle stays.
    assert await lookup is None


async def test_a_battle_closed_in_another_tab_while_waiting_is_told_as_ended(
    slow_demo_url: str, sqlite_url: str
) -> None:
    # New battle in the other tab closes it (abandoned by its voter, not cut off): the waiting
    # page must not keep saying it waits.
    svc = service(sqlite_url, demo_config_data(slow_demo_url))
    voter = Voter("v1", None)
    old, first, lookup = await _waiting_on(svc, voter, "The other tab's battle")
    await svc.abandon(first.battle_id)
    async for _ in old:
        pass
    ended = await lookup
    assert ended is not None and ended.view is None and ended.notice == ENDED
