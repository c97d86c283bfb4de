"""Migrations and the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from arena import db
from arena.answer import Answer, Candidate, Usage
from arena.errors import BattleNotFound, StorageError, TurnRejected, VoteRejected
from arena.lifecycle import TRANSITIONS, BattleState, Outcome, Side
from arena.store import Store


@pytest.fixture
def store(database_url: str) -> Store:
    return Store(db.make_engine(database_url))


def answer(model: str, error: str | None = None, **kw: object) -> Answer:
    return Answer(model=model, content="" if error else f"answer from {model}", error=error, **kw)  # type: ignore[arg-type]


def new_battle(store: Store, voter: str = "v1") -> str:
    store.touch_voter(voter, "h" * 64)
    battle_id = str(uuid.uuid4())
    store.create_battle(battle_id, voter, "alpha", "beta", "hello")
    return battle_id


def test_migrations_match_tables(database_url: str) -> None:
    engine = db.make_engine(database_url)
    db.check_current(engine)
    names = set(sa.inspect(engine).get_table_names())
    assert {"battles", "messages", "votes", "voters", "candidates", "meta"} <= names
    # Autogenerate finds nothing: the migration and the table definitions agree.
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_downgrade_and_unmigrated_is_refused(database_url: str) -> None:
    db.downgrade(database_url, "base")
    engine = db.make_engine(database_url)
    with pytest.raises(StorageError, match="arena db upgrade"):
        db.check_current(engine)
    db.upgrade(database_url)
    db.check_current(engine)


def test_full_lifecycle(store: Store) -> None:
    battle_id = new_battle(store)
    battle = store.battle(battle_id)
    assert battle.status is BattleState.ANSWERING and battle.turns == 1
    with pytest.raises(VoteRejected, match="must finish"):
        store.record_vote(battle_id, Outcome.A, "v1", None)
    usage = Usage(prompt_tokens=6, completion_tokens=9, samples=2, reward_calls=2, reward_tokens=40)
    candidates = (
        Candidate("first", score=0.2, usage=Usage(3, 4), endpoint="http://x/v1#m", error=None),
        Candidate("second", score=0.9, chosen=True, usage=Usage(3, 5), extracted="42"),
    )
    state = store.finish_turn(
        battle_id,
        1,
        {
            Side.A: answer(
                "alpha",
                reasoning="why",
                ttft_ms=5.0,
                answer_ms=9.0,
                usage=usage,
                candidates=candidates,
                endpoint="http://x/v1#m",
            ),
            Side.B: answer("beta", finish_reason="stop"),
        },
    )
    assert state is BattleState.AWAITING_VOTE
    turn = store.begin_turn(battle_id, "and then?", max_turns=3)
    assert turn == 2
    store.finish_turn(battle_id, 2, {Side.A: answer("alpha"), Side.B: answer("beta")})
    voted = store.record_vote(battle_id, Outcome.TIE, "v1", "h" * 64)
    assert voted.status is BattleState.VOTED
    vote = store.vote(battle_id)
    assert vote is not None and vote.outcome is Outcome.TIE and vote.voter_id == "v1"
    rows = store.messages(battle_id)
    assert [(r["turn"], r["side"], r["role"]) for r in rows] == [
        (1, "a", "user"),
        (1, "a", "assistant"),
        (1, "b", "user"),
        (1, "b", "assistant"),
        (2, "a", "user"),
        (2, "a", "assistant"),
        (2, "b", "user"),
        (2, "b", "assistant"),
    ]
    first_a = rows[1]
    assert first_a["reasoning"] == "why" and first_a["endpoint"] == "http://x/v1#m"
    assert first_a["usage"] == usage.as_dict()
    assert (first_a["prompt_tokens"], first_a["completion_tokens"]) == (6, 9)
    c = db.candidates.c
    with store.engine.connect() as conn:
        kept = conn.execute(
            sa.select(c.content, c.chosen, c.endpoint, c.extracted, c.usage).order_by(c.position)
        ).all()
    assert [tuple(r) for r in kept] == [
        ("first", False, "http://x/v1#m", None, Usage(3, 4).as_dict()),
        ("second", True, None, "42", Usage(3, 5).as_dict()),
    ]
    # The battle's compute for the leaderboard: every sample's tokens and the reward model's.
    battle = store.battle(battle_id)
    with store.engine.connect() as conn:
        tokens_a = conn.execute(
            sa.select(db.battles.c.tokens_a).where(db.battles.c.id == battle.id)
        ).scalar_one()
    # Turn 2 reported no usage: its 17 characters count as (17 + 3) // 4 = 5 tokens.
    assert tokens_a == 9 + 40 + 5


def test_vote_rules(store: Store) -> None:
    battle_id = new_battle(store)
    store.finish_turn(battle_id, 1, {Side.A: answer("alpha"), Side.B: answer("beta")})
    with pytest.raises(VoteRejected, match="another session"):
        store.record_vote(battle_id, Outcome.A, "intruder", None)
    store.record_vote(battle_id, Outcome.A, "v1", None)
    for outcome in Outcome:
        with pytest.raises(VoteRejected, match="already has a vote"):
            store.record_vote(battle_id, outcome, "v1", None)
    with pytest.raises(TurnRejected, match="over"):
        store.begin_turn(battle_id, "more", max_turns=5)
    assert store.count_votes() == 1
    with pytest.raises(BattleNotFound):
        store.record_vote("nope", Outcome.A, "v1", None)


def test_failed_side_cannot_be_voted(store: Store) -> None:
    battle_id = new_battle(store)
    state = store.finish_turn(
        battle_id, 1, {Side.A: answer("alpha"), Side.B: answer("beta", error="timed out")}
    )
    assert state is BattleState.FAILED
    with pytest.raises(VoteRejected, match="failed"):
        store.record_vote(battle_id, Outcome.A, "v1", None)
    assert store.vote(battle_id) is None


def test_turn_limit(store: Store) -> None:
    battle_id = new_battle(store)
    store.finish_turn(battle_id, 1, {Side.A: answer("alpha"), Side.B: answer("beta")})
    with pytest.raises(TurnRejected, match="limit of 1"):
        store.begin_turn(battle_id, "more", max_turns=1)


def test_abandoned_battle(store: Store) -> None:
    battle_id = new_battle(store)
    assert store.abandon(battle_id)
    # Answers that arrive after the voter left are kept, the status stays abandoned.
    state = store.finish_turn(battle_id, 1, {Side.A: answer("alpha"), Side.B: answer("beta")})
    assert state is BattleState.ABANDONED
    with pytest.raises(VoteRejected, match="closed"):
        store.record_vote(battle_id, Outcome.B, "v1", None)


def test_concurrent_votes_one_wins(store: Store) -> None:
    battle_id = new_battle(store)
    store.finish_turn(battle_id, 1, {Side.A: answer("alpha"), Side.B: answer("beta")})
    results: list[str] = []
    barrier = threading.Barrier(8)

    def vote(outcome: Outcome) -> None:
        barrier.wait()
        try:
            store.record_vote(battle_id, outcome, "v1", None)
            results.append("ok")
        except VoteRejected:
            results.append("refused")

    threads = [threading.Thread(target=vote, args=(o,)) for o in list(Outcome) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7
    assert store.count_votes() == 1


def test_salt_is_stable_and_private(store: Store) -> None:
    salt = store.ip_salt()
    assert len(salt) == 32 and store.ip_salt() == salt


def test_database_refuses_bad_rows(store: Store) -> None:
    battle_id = new_battle(store)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(
            db.votes.insert().values(battle_id=battle_id, outcome="maybe", created_at=sa.func.now())
        )
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(db.battles.update().values(status="limbo"))


def test_state_machine_is_closed() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets
    assert TRANSITIONS[BattleState.VOTED] == frozenset()


def test_stale_battles_are_swept(store: Store) -> None:
    from datetime import timedelta

    from arena.store import now

    old_unvoted, old_voted, fresh = new_battle(store), new_battle(store), new_battle(store)
    for battle_id in (old_unvoted, old_voted, fresh):
        store.finish_turn(battle_id, 1, {Side.A: answer("alpha"), Side.B: answer("beta")})
    store.record_vote(old_voted, Outcome.A, "v1", None)
    with store.engine.begin() as conn:
        conn.execute(
            db.battles.update()
            .where(db.battles.c.id.in_([old_unvoted, old_voted]))
            .values(updated_at=now() - timedelta(hours=3))
        )
    assert store.abandon_stale(now() - timedelta(hours=2)) == 1
    statuses = {b: store.battle(b).status for b in (old_unvoted, old_voted, fresh)}
    assert statuses == {
        old_unvoted: BattleState.ABANDONED,
        old_voted: BattleState.VOTED,
        fresh: BattleState.AWAITING_VOTE,
    }
