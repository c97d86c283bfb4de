"""A base model against its best-of-N variant, through the whole app (issue 7): the candidates
are stored, and nothing the page receives before the vote tells which side is which."""

from __future__ import annotations

import json
import random

import httpx
import sqlalchemy as sa

from arena import db
from arena.battles import TOGETHER, BattleService
from arena.config import parse_config
from arena.identity import Identity, Voter
from arena.lifecycle import BattleState
from arena.router import Router
from arena.store import Store
from tests.servers import demo_config_data
from tests.test_e2e import client


def math_registry(url: str, reveal: str) -> dict:
    data = demo_config_data(url, {}, reveal=reveal)
    math = {"base_url": f"{url}/v1", "model": "math"}
    params = {"temperature": 1.0, "max_tokens": 512}
    data["models"] = [
        {"name": "demo-math", "family": "demo-math", "params": params, "endpoints": [math]},
        {
            "name": "demo-math-best-of-8",
            "family": "demo-math",
            "params": params,
            "endpoints": [math],
            "strategy": {
                "kind": "best_of_n",
                "n": 8,
                "reward": {"base_url": url, "model": "reward", "api": "classify"},
            },
        },
    ]
    return data


def rows(database_url: str, table: sa.Table) -> list[dict]:
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    engine.dispose()
    return out


def test_base_against_best_of_8(arena_server, slow_demo_url: str, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    url, recorder = arena_server(math_registry(slow_demo_url, "together"))
    c = client(url)
    job = c.submit("What is 17 * 23 + 4?", api_name="/ask")
    job.result(timeout=120)
    outputs = [list(o) for o in job.outputs()]
    final_a, final_b = outputs[-1][0], outputs[-1][1]
    assert final_a[-1]["content"] and final_b[-1]["content"]
    held = [o for o in outputs if TOGETHER in json.dumps(o[0], ensure_ascii=False)]
    assert held, "the page saw the answers held back while they were being made"
    for chat_a, chat_b, *_ in outputs:
        # Until both are ready the two panes are the same, update by update: no progress, no
        # timer, no first words from the faster side. Then both answers, whole, at once.
        same = json.dumps(chat_a) == json.dumps(chat_b)
        assert same or (chat_a, chat_b) == (final_a, final_b)
    before = recorder.text()
    for hint in ("demo-math", "best", "sampling", "scoring", "reward", "Thought for", "8765"):
        assert hint not in before, hint
    revealed = json.dumps(c.predict(api_name="/vote_tie"), ensure_ascii=False)
    # After the vote the best-of-8 side says what it spent; the base side took one sample.
    assert "8 samples, 8 reward-model calls" in revealed
    assert revealed.count("tokens generated") == 2

    messages = [m for m in rows(sqlite_url, db.messages) if m["role"] == "assistant"]
    battle = rows(sqlite_url, db.battles)[0]
    by_model = {m["model"]: m for m in messages}
    assert set(by_model) == {battle["model_a"], battle["model_b"]}
    base, best = by_model["demo-math"], by_model["demo-math-best-of-8"]
    assert base["endpoint"] == best["endpoint"] == f"{slow_demo_url}/v1#math"
    assert base["usage"]["samples"] == 1 and base["usage"]["reward_calls"] == 0
    assert best["usage"]["samples"] == 8 and best["usage"]["reward_calls"] == 8
    candidates = rows(sqlite_url, db.candidates)
    assert {c["message_id"] for c in candidates} == {best["id"]}
    assert len(candidates) == 8
    chosen = [c for c in candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["content"] == best["content"]
    assert chosen[0]["score"] == max(c["score"] for c in candidates)
    # The compute sums equal the per-sample usage.
    for key in ("prompt_tokens", "completion_tokens", "reward_tokens"):
        assert best["usage"][key] == sum(c["usage"][key] for c in candidates)
    assert best["completion_tokens"] == best["usage"]["completion_tokens"]


async def test_stream_mode_shows_a_strategys_progress(demo_url: str, sqlite_url: str) -> None:
    # With `reveal = "stream"` (the default) the strategy side says what it is doing: the
    # operator's choice, documented; `together` is the fair one for such battles.
    config = parse_config(math_registry(demo_url, "stream"))
    store = Store(db.make_engine(sqlite_url))
    router = Router(config, httpx.AsyncClient(), rng=random.Random(0))
    svc = BattleService(store, router, config, Identity(secret_key=b"k" * 32, ip_salt=b"s"))
    views = [v async for v in svc.start(Voter("v1", None), "What is 2 + 2?")]
    assert views[-1].state is BattleState.AWAITING_VOTE
    battle = store.battle(views[-1].battle_id)
    side = "a" if battle.model_a == "demo-math-best-of-8" else "b"
    shown = [getattr(v, side)[-1].progress for v in views]
    assert any(p and p.startswith("sampling") for p in shown)
    assert views[-1].a[-1].progress is None and views[-1].b[-1].progress is None
