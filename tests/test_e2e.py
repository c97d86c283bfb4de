"""A full battle through gradio_client against real servers on free ports.

Every byte the app sends back passes through a recording proxy, so "the names were
absent from every response before the vote" is checked on the wire, not on objects.
"""

from __future__ import annotations

import json

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from arena import db
from tests.servers import DEMO_MODELS, demo_config_data


def votes(database_url: str) -> list[tuple[str, str]]:
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.votes.c.battle_id, db.votes.c.outcome)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def last_outputs(c: Client, prompt: str) -> list:
    job = c.submit(prompt, api_name="/ask")
    job.result(timeout=60)
    return list(job.outputs()[-1])


def chat_text(messages: list) -> str:
    return json.dumps(messages)


@pytest.fixture
def demo_registry(demo_url: str) -> dict:
    return demo_config_data(demo_url, DEMO_MODELS, max_turns=2)


def test_full_battle(arena_server, demo_registry: dict, database_url: str) -> None:  # type: ignore[no-untyped-def]
    # On SQLite and on PostgreSQL: the whole app, not only the store.
    url, recorder = arena_server(demo_registry, database_url)
    names = [m["name"] for m in demo_registry["models"]]
    page = httpx.get(url + "/").text
    c = client(url)
    chat_a, chat_b, _, status, _ = last_outputs(c, "Explain recursion with an example")
    assert "Which answer is better?" in status
    answer_a = chat_a[-1]["content"][0]["text"]
    assert answer_a and chat_b[-1]["content"][0]["text"]
    c2 = last_outputs(c, "Shorter please")  # a follow-up goes to both sides
    assert len(c2[0]) >= 4 and "no follow-ups left" in c2[3]

    before = recorder.text() + page
    assert answer_a[:40] in before  # the recorder saw the answers stream by
    assert "Two anonymous models answer" in recorder.text()  # and the client's page config
    for name in names:
        assert name not in before, f"{name} leaked before the vote"
    assert votes(database_url) == []

    chat_a, chat_b, _, status, reveal = c.predict(api_name="/vote_a")
    revealed = reveal["value"]
    shown = [n for n in names if n in revealed]
    assert len(shown) == 2 and "Your vote: A is better" in revealed
    assert revealed.index("Model A") < revealed.index("Model B")
    ((battle_id, outcome),) = votes(database_url)
    assert outcome == "a"

    with pytest.raises(Exception, match="already has a vote"):
        c.predict(api_name="/vote_b")
    assert votes(database_url) == [(battle_id, "a")]


def test_failed_side_refuses_vote(arena_server, demo_url: str, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    data = demo_config_data(demo_url, {"demo-terse": "terse"})
    # Its server is up (so it is drawn: a model with no healthy endpoint is not; issue 7), but
    # it does not know the model, so every answer of this side fails.
    data["models"].append(
        {"name": "offline", "endpoints": [{"base_url": f"{demo_url}/v1", "model": "gone"}]}
    )
    url, recorder = arena_server(data)
    c = client(url)
    chat_a, chat_b, _, status, _ = last_outputs(c, "hello")
    assert "cannot be voted on" in status
    failed = chat_text(chat_a) + chat_text(chat_b)
    assert "not available at its endpoint" in failed
    assert "127.0.0.1" not in failed and "offline" not in recorder.text()
    with pytest.raises(Exception, match="failed to answer"):
        c.predict(api_name="/vote_tie")
    assert votes(sqlite_url) == []


def test_vote_without_battle_is_refused(arena_server, demo_registry: dict) -> None:  # type: ignore[no-untyped-def]
    url, _ = arena_server(demo_registry)
    with pytest.raises(Exception, match="no battle"):
        client(url).predict(api_name="/vote_a")


def test_sessions_are_isolated(arena_server, demo_registry: dict, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = arena_server(demo_registry)
    first, second = client(url), client(url)
    last_outputs(first, "one")
    with pytest.raises(Exception, match="no battle"):
        second.predict(api_name="/vote_a")  # another browser cannot vote on first's battle
    first.predict(api_name="/vote_b")
    assert [o for _, o in votes(sqlite_url)] == ["b"]


def test_new_battle_abandons_unvoted(arena_server, demo_registry: dict, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = arena_server(demo_registry)
    c = client(url)
    last_outputs(c, "first")
    chat_a, chat_b, _, status, _ = c.predict(api_name="/new_battle")
    # Updates, which also put back the panes' plain labels after a reveal named the models.
    assert chat_a["value"] == [] and chat_b["value"] == [] and status == ""
    assert (chat_a["label"], chat_b["label"]) == ("Model A", "Model B")
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(db.battles.c.status)).scalars().all()
    assert statuses == ["abandoned"]
    with pytest.raises(Exception, match="no battle"):
        c.predict(api_name="/vote_a")
    last_outputs(c, "second")  # and a fresh battle can start
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.battles)).scalar() == 2


def test_a_script_gets_refusals_as_errors(arena_server, demo_registry: dict) -> None:  # type: ignore[no-untyped-def]
    # The page's checks run in a Gradio validator (issue 9); a script sees its refusal too.
    url, _ = arena_server(demo_registry)
    c = client(url)
    with pytest.raises(Exception, match="Type a message first"):
        c.predict("   ", api_name="/ask")
    with pytest.raises(Exception, match="too long"):
        c.predict("x" * 9000, api_name="/ask")
    assert "Which answer is better?" in last_outputs(c, "now a real one")[3]
