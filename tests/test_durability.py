"""A process that dies loses only the battles it was streaming, and those end as abandoned
within about a minute instead of staying `answering` until the sweep (issue 10, §3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from gradio_client import Client

from arena import db
from arena.lifecycle import BattleState
from arena.store import Store
from tests.servers import demo_config_data
from tests.test_security import start_arena


def statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(db.battles.c.id, db.battles.c.status)).all())


def test_battles_of_a_gone_process_are_abandoned(database_url: str) -> None:
    store = Store(db.make_engine(database_url))
    store.heartbeat("alive")
    store.heartbeat("dead")
    for battle_id, owner in [("b-alive", "alive"), ("b-dead", "dead"), ("b-old", None)]:
        store.create_battle(battle_id, None, "m1", "m2", "hi", owner=owner)
    store.create_battle("b-stopped", None, "m1", "m2", "hi", owner="stopped-cleanly")
    later = datetime.now(UTC) + timedelta(seconds=1)
    time.sleep(1.1)
    store.heartbeat("alive")  # "dead" is not heard from again
    assert store.abandon_orphans(gone_before=later) == 2  # b-dead, and b-stopped (unlisted)
    found = statuses(store.engine)
    assert found["b-alive"] == found["b-old"] == BattleState.ANSWERING.value
    assert found["b-dead"] == found["b-stopped"] == BattleState.ABANDONED.value
    with store.engine.connect() as conn:  # the dead process's row is gone; it may come back
        assert conn.execute(sa.select(db.instances.c.id)).scalars().all() == ["alive"]
    store.heartbeat("dead")
    store.retire("alive")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(db.instances.c.id)).scalars().all() == ["dead"]


def test_kill_9_mid_stream(tmp_path: Path, slow_demo_url: str, database_url: str) -> None:
    data = demo_config_data(
        slow_demo_url,
        {"contestant-one": "verbose", "contestant-two": "reasoner"},
        heartbeat_seconds=0.5,
        owner_gone_seconds=2,
    )
    engine = db.make_engine(database_url)
    first = start_arena(tmp_path, data, database_url, "first")
    client = Client(first.url, verbose=False, download_files=False, analytics_enabled=False)
    client.submit("Short one", api_name="/ask").result(timeout=60)
    client.predict(api_name="/vote_a")  # acknowledged
    (voted,) = [b for b, s in statuses(engine).items() if s == "voted"]
    streaming = Client(first.url, verbose=False, download_files=False, analytics_enabled=False)
    streaming.submit("Tell me a long story", api_name="/ask")
    deadline = time.monotonic() + 30
    while BattleState.ANSWERING.value not in statuses(engine).values():
        assert time.monotonic() < deadline, "the second battle never started"
        time.sleep(0.1)
    first.proc.kill()  # kill -9, mid-answer
    first.proc.wait()
    cut = next(b for b, s in statuses(engine).items() if s == BattleState.ANSWERING.value)

    second = start_arena(tmp_path, data, database_url, "second")  # restarted, no manual step
    try:
        deadline = time.monotonic() + 30
        while statuses(engine)[cut] != BattleState.ABANDONED.value:
            assert time.monotonic() < deadline, "the cut-off battle stayed answering"
            time.sleep(0.2)
        assert statuses(engine)[voted] == "voted"  # the acknowledged vote is kept
        with engine.connect() as conn:
            assert conn.execute(sa.select(db.votes.c.battle_id)).scalars().all() == [voted]
        again = Client(second.url, verbose=False, download_files=False, analytics_enabled=False)
        job = again.submit("After the restart", api_name="/ask")
        job.result(timeout=60)
        assert "Which answer is better?" in job.outputs()[-1][3]
    finally:
        second.proc.kill()
        second.proc.wait()
        engine.dispose()
