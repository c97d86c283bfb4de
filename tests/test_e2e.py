"""A full battle through gradio_client against real servers on free ports.

Every byte the app sends back passes through a recording proxy, so "the names were
absent from every response before the vote" is checked on the wire, not on objects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from arena import db
from arena.app import create_app
from arena.config import Settings
from tests.servers import DEMO_MODELS, demo_config_data, free_port, serve


@dataclass
class Recorder:
    chunks: list[bytes] = field(default_factory=list)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def recording_proxy(target: str, recorder: Recorder) -> Starlette:
    client = httpx.AsyncClient(base_url=target, timeout=None)

    async def forward(request: Request) -> StreamingResponse:
        upstream = await client.send(
            client.build_request(
                request.method,
                request.url.path,
                params=request.query_params,
                headers=[(k, v) for k, v in request.headers.raw if k.lower() != b"host"],
                content=await request.body(),
            ),
            stream=True,
        )

        async def body() -> AsyncIterator[bytes]:
            async for chunk in upstream.aiter_raw():
                recorder.chunks.append(chunk)
                yield chunk

        headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
        }
        return StreamingResponse(
            body(),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(upstream.aclose),
        )

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


def write_config(tmp_path: Path, data: dict) -> Path:
    lines = [
        "[arena]",
        'title = "Test Arena"',
        "demo = true",
        "max_turns = 2",
        "",
        "[timeouts]",
        "connect = 2",
        "first_token = 10",
        "between_tokens = 10",
        "total = 30",
    ]
    for m in data["models"]:
        ep = m["endpoints"][0]
        lines += [
            "",
            "[[models]]",
            f'name = "{m["name"]}"',
            'organization = "Arena demo"',
            f'endpoints = [{{ base_url = "{ep["base_url"]}", model = "{ep["model"]}" }}]',
        ]
    path = tmp_path / "arena.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def arena_server(tmp_path: Path, sqlite_url: str):  # type: ignore[no-untyped-def]
    """Start an arena for a registry; yield (proxy URL, recorder, database URL)."""
    started = []

    def start(data: dict) -> tuple[str, Recorder]:
        settings = Settings(
            config_path=write_config(tmp_path, data), database_url=sqlite_url, port=free_port()
        )
        app = create_app(settings)
        ctx = serve(app.asgi, "/api/health")
        url = ctx.__enter__()
        started.append(ctx)
        recorder = Recorder()
        proxy = serve(recording_proxy(url, recorder), "/api/health")
        started.append(proxy)
        return proxy.__enter__(), recorder

    yield start
    for ctx in reversed(started):
        ctx.__exit__(None, None, None)


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
    return demo_config_data(demo_url, DEMO_MODELS)


def test_full_battle(arena_server, demo_registry: dict, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    url, recorder = arena_server(demo_registry)
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
    for name in names:
        assert name not in before, f"{name} leaked before the vote"
    assert votes(sqlite_url) == []

    chat_a, chat_b, _, status, reveal = c.predict(api_name="/vote_a")
    revealed = reveal["value"]
    shown = [n for n in names if n in revealed]
    assert len(shown) == 2 and "Your vote: A is better" in revealed
    assert revealed.index("Model A") < revealed.index("Model B")
    ((battle_id, outcome),) = votes(sqlite_url)
    assert outcome == "a"

    with pytest.raises(Exception, match="already has a vote"):
        c.predict(api_name="/vote_b")
    assert votes(sqlite_url) == [(battle_id, "a")]


def test_failed_side_refuses_vote(arena_server, demo_url: str, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    data = demo_config_data(demo_url, {"demo-terse": "terse"})
    data["models"].append(
        {
            "name": "offline",
            "endpoints": [{"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "gone"}],
        }
    )
    url, recorder = arena_server(data)
    c = client(url)
    chat_a, chat_b, _, status, _ = last_outputs(c, "hello")
    assert "cannot be voted on" in status
    failed = chat_text(chat_a) + chat_text(chat_b)
    assert "could not be reached" in failed
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
