"""Vote integrity and input safety (issue 8): each defence tried the way an attacker would.

Battles run over real HTTP to the demo model server and a real SQLite database migrated by
Alembic; the HTTP checks go through the real `arena serve` process where uvicorn's own behaviour
is the point (X-Forwarded-For, request size), and in-process through httpx's ASGI transport
elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.cookiejar
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from arena import db
from arena.app import create_app
from arena.battles import BattleService, BattleView
from arena.config import Secret, Settings, parse_config
from arena.errors import Banned, ConfigError, RateLimited, TurnRejected, VoteRejected
from arena.identity import VOTER_COOKIE, Identity, Limits, Voter, limit_storage
from arena.leaks import rules_for
from arena.router import Router
from arena.store import Store
from tests.servers import NO_LIMITS, demo_config_data, free_port, serve, write_config

SALT = "test-salt"


def service(database_url: str, data: dict[str, Any], redis_url: str | None = None) -> BattleService:
    config = parse_config(data)
    store = Store(db.make_engine(database_url))
    identity = Identity(
        secret_key=b"k" * 32,
        ip_salt=SALT.encode(),
        limits=Limits(lambda: config.limits, limit_storage(redis_url)),
        banned=store.banned_ips,
    )
    router = Router(config, httpx.AsyncClient(), rng=random.Random(0))
    return BattleService(store, router, config, identity)


async def play(svc: BattleService, voter: Voter, prompt: str) -> list[BattleView]:
    return [v async for v in svc.start(voter, prompt)]


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0)
            for t in (db.voters, db.battles, db.messages, db.votes)
        }


def ip_hash(ip: str) -> str:
    return hmac.new(SALT.encode(), ip.encode(), hashlib.sha256).hexdigest()


# -- §3 input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "   \n\t ",
        "\x01\x02\x03\x7f",  # C0 controls
        "\x85\x9f\x90",  # C1 controls
        "\u200b\u200c\u200d\ufeff\u2060",  # zero-width and format characters
        "\u202e\u2066 \u200b",  # bidi overrides
        "\ufe0f\u0301\u20dd",  # a variation selector and combining marks alone
        "\u3164 \u2800\u115f",  # blank letters: Hangul fillers, blank braille
        "hello \ud800 world",  # a lone surrogate
        "x" * 101,  # too long
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    prompt: str, demo_url: str, sqlite_url: str
) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url, max_prompt_chars=100))
    with pytest.raises(TurnRejected) as err:
        await play(svc, Voter("v", ip_hash("198.51.100.1")), prompt)
    assert str(err.value) and "Error" not in str(err.value)
    assert counts(svc.store.engine) == {"voters": 0, "battles": 0, "messages": 0, "votes": 0}


async def test_ordinary_text_with_format_characters_is_kept(demo_url: str, sqlite_url: str) -> None:
    # A zero-width joiner inside an emoji, or a right-to-left mark in Hebrew, is text.
    svc = service(sqlite_url, demo_config_data(demo_url))
    views = await play(svc, Voter("v"), "👩\u200d💻 שלום\u200f world")
    assert views[-1].a[0].prompt == "👩\u200d💻 שלום\u200f world"


# -- §2 limits -------------------------------------------------------------------------------


def limited(demo_url: str, **limits: int) -> dict[str, Any]:
    data = demo_config_data(demo_url)
    data["limits"] = {**NO_LIMITS, **limits}
    return data


async def test_prompt_limit_per_voter_and_per_ip(demo_url: str, sqlite_url: str) -> None:
    svc = service(
        sqlite_url, limited(demo_url, prompts_per_minute_voter=2, prompts_per_minute_ip=3)
    )
    one = Voter("one", ip_hash("198.51.100.1"))
    await play(svc, one, "first")
    await play(svc, one, "second")
    before = counts(svc.store.engine)
    with pytest.raises(RateLimited, match="at most 2 prompts a minute per person"):
        await play(svc, one, "third")
    assert counts(svc.store.engine) == before  # a refused prompt leaves nothing behind
    # A fresh cookie from the same address is still the same address.
    await play(svc, Voter("two", ip_hash("198.51.100.1")), "fourth")
    with pytest.raises(RateLimited, match="from your network"):
        await play(svc, Voter("three", ip_hash("198.51.100.1")), "fifth")
    await play(svc, Voter("four", ip_hash("198.51.100.2")), "another network")


async def test_battle_limit_counts_rerolls(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, limited(demo_url, battles_per_hour_voter=2))
    voter = Voter("picky")
    for prompt in ("one", "two"):  # started, then dropped for New battle
        views = await play(svc, voter, prompt)
        await svc.abandon(views[-1].battle_id)
    with pytest.raises(RateLimited, match="new battles an hour"):
        await play(svc, voter, "three")


async def test_vote_limit_per_voter(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, limited(demo_url, votes_per_day_voter=1))
    voter = Voter("v")
    first, second = [(await play(svc, voter, p))[-1].battle_id for p in ("a", "b")]
    # A vote that cannot be taken (not this voter's battle) uses up no quota.
    with pytest.raises(VoteRejected, match="another session"):
        await svc.vote(first, Voter("intruder"), "a")
    await svc.vote(first, voter, "a")
    again = await svc.vote(first, voter, "a")  # a double click: the reveal again, not counted
    assert again.outcome == "a"
    with pytest.raises(VoteRejected, match="already has a vote"):  # refused, not counted
        await svc.vote(first, voter, "b")
    with pytest.raises(RateLimited, match="at most 1 vote a day per person"):
        await svc.vote(second, voter, "a")
    assert counts(svc.store.engine)["votes"] == 1


def _redis_url() -> str | None:
    """Redis with a key prefix of this caller's own (tests run on parallel workers); None where
    there is no Redis."""
    try:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/7", socket_connect_timeout=1)
        client.ping()
        client.close()
    except Exception:
        return None
    return f"redis://127.0.0.1:6379/7?prefix=test-{uuid.uuid4().hex}"


def need_redis() -> str:
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis at 127.0.0.1:6379: limits shared between processes not tested")
    return url


async def test_limits_are_shared_through_redis(demo_url: str, sqlite_url: str) -> None:
    # Two services, as two processes would be: one count.
    url = need_redis()
    data = limited(demo_url, prompts_per_minute_ip=3)
    first, second = service(sqlite_url, data, url), service(sqlite_url, data, url)
    voter = Voter("x", ip_hash("198.51.100.7"))
    await play(first, voter, "one")
    await play(second, voter, "two")
    await play(first, voter, "three")
    with pytest.raises(RateLimited):
        await play(second, voter, "four")


# -- the real process: cookies, addresses, request size ------------------------------------------


class ArenaProcess:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc


def start_arena(
    tmp_path: Path, data: dict[str, Any], database_url: str, name: str, **env: str
) -> ArenaProcess:
    port = free_port()
    (tmp_path / name).mkdir()
    config = write_config(tmp_path / name, data)
    environ = {
        **os.environ,
        "ARENA_CONFIG": str(config),
        "ARENA_DATABASE_URL": database_url,
        "ARENA_PORT": str(port),
        "ARENA_IP_SALT": SALT,
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "arena", "serve"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/api/health", timeout=1)
            return ArenaProcess(url, proc)
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                raise RuntimeError(err) from None
            time.sleep(0.1)


@dataclass
class Pair:
    """Two `arena serve` processes on one database, sharing limits through Redis when there is
    one: started once for this module's HTTP tests (each start costs seconds)."""

    one: ArenaProcess
    two: ArenaProcess
    database_url: str
    redis: str | None


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, demo_url: str) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("pair")
    database_url = f"sqlite:///{tmp / 'arena.db'}"
    db.upgrade(database_url)
    redis = _redis_url()
    data = limited(demo_url, prompts_per_minute_voter=3)
    env = {"ARENA_REDIS_URL": redis} if redis else {}
    one = start_arena(tmp, data, database_url, "one", **env)
    two = start_arena(tmp, data, database_url, "two", **env)
    yield Pair(one, two, database_url, redis)
    for arena in (one, two):
        arena.proc.kill()  # how it stops is not under test here
        arena.proc.wait()


def ask(url: str, prompt: str, headers: dict[str, str] | None = None) -> Any:
    """One prompt through the page's scripted API (gradio_client), as a script would send it."""
    from gradio_client import Client

    client = Client(
        url, verbose=False, download_files=False, analytics_enabled=False, headers=headers
    )
    try:
        return client.predict(prompt, api_name="/ask")
    finally:
        client.close()


def test_spoofed_forwarded_for_is_ignored_and_forged_cookie_not_stored(pair: Pair) -> None:
    forged = {"X-Forwarded-For": "203.0.113.66", "Cookie": f"{VOTER_COOKIE}=i-am-somebody-else"}
    ask(pair.one.url, "Who am I?", headers=forged)
    engine = db.make_engine(pair.database_url)
    with engine.connect() as conn:
        voters = conn.execute(sa.select(db.voters.c.id, db.voters.c.ip_hash)).all()
    engine.dispose()
    assert voters and not any("somebody" in voter_id for voter_id, _ in voters)
    # The socket's address, not the header's: no proxy is trusted by default.
    assert {stored for _, stored in voters} == {ip_hash("127.0.0.1")}
    # A forged cookie is replaced by a signed one.
    response = httpx.get(pair.one.url + "/", cookies={VOTER_COOKIE: "i-am-somebody-else"})
    issued = response.cookies.get(VOTER_COOKIE)
    assert issued and issued != "i-am-somebody-else" and "." in issued
    # Behind the sanitiser, the page itself refuses forms posted elsewhere and remote images.
    policy = response.headers["content-security-policy"]
    assert "form-action 'self'" in policy and "img-src 'self' data: blob:" in policy
    # Nor may another site frame it (its single-letter vote keys could then be lured).
    assert "frame-ancestors 'self'" in policy
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    again = httpx.get(pair.one.url + "/", cookies={VOTER_COOKIE: issued})
    assert VOTER_COOKIE not in again.cookies  # a valid cookie is kept


def _event(client: httpx.Client, url: str, api_name: str, data: list[Any], session: str) -> Any:
    """One event over Gradio's queue protocol, as a bare script sends it: join, then read the
    event stream to its end. Returns the last message."""
    config = httpx.get(url + "/config").json()  # not through `client`: its jar stays as it was
    fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    body = {"data": data, "fn_index": fn, "session_hash": session, "event_data": None}
    assert client.post(url + "/gradio_api/queue/join", json=body).status_code == 200
    last: Any = None
    params = {"session_hash": session}
    with client.stream("GET", url + "/gradio_api/queue/data", params=params) as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
                if last.get("msg") == "process_completed":
                    break
    return last


def test_a_vote_that_reaches_another_process_says_to_reload(pair: Pair) -> None:
    # Its process died, or the balancer moved the voter: the page's session is gone, while the
    # battle waits in the database for the reload (issue 10, docs/deploy.md).
    with httpx.Client(timeout=60) as client:
        client.get(pair.one.url + "/")  # the voter cookie, as a browser gets it with the page
        session = "moved-session-1"
        asked = _event(client, pair.one.url, "ask", ["A question before the move", None], session)
        assert asked["success"], asked
        voted = _event(client, pair.two.url, "vote_a", [None], session)
        assert not voted["success"] and "Reload the page" in json.dumps(voted), voted
        again = _event(client, pair.two.url, "vote_a", [None], "moved-session-2")
    assert "Reload the page" in json.dumps(again)  # the same on any page of this voter
    with httpx.Client(timeout=60) as stranger:  # another voter, with no battle open
        stranger.get(pair.two.url + "/")
        theirs = _event(stranger, pair.two.url, "vote_a", [None], "moved-session-3")
    assert "There is no battle to vote on yet." in json.dumps(theirs)
    # A browser that keeps no cookies is known by its page session alone: no reload finds
    # its battle, so it is told to start again.
    refuse_all = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    jar = http.cookiejar.CookieJar(refuse_all)
    with httpx.Client(timeout=60, cookies=jar) as cookieless:
        session = "moved-session-4"
        asked = _event(cookieless, pair.one.url, "ask", ["Asked with no cookie", None], session)
        assert asked["success"], asked
        voted = _event(cookieless, pair.two.url, "vote_a", [None], session)
    assert "without cookies" in json.dumps(voted)
    engine = sa.create_engine(pair.database_url)
    with engine.connect() as conn:
        status = conn.scalar(
            sa.select(db.battles.c.status).order_by(db.battles.c.created_at.desc()).limit(1)
        )
    engine.dispose()
    assert status == "awaiting_vote"  # nothing was voted on the voter's behalf


def test_a_script_that_keeps_cookies_can_vote_on_its_first_battle(pair: Pair) -> None:
    # Review of issue 8: the first event set a cookie, so the vote came from another voter id.
    with httpx.Client(timeout=60) as client:  # keeps the cookies it is given, as scripts do
        session = "scripted-session-1"
        asked = _event(client, pair.one.url, "ask", ["A question from a script", None], session)
        assert asked["success"], asked
        voted = _event(client, pair.one.url, "vote_a", [None], session)
    assert voted["success"], voted
    assert "Thanks for voting" in json.dumps(voted["output"])


def test_trusted_proxy_forwarded_for_is_believed() -> None:
    identity = Identity(secret_key=b"k", ip_salt=b"s", trusted_proxies=["10.0.0.0/8", "::1"])
    headers = {"x-forwarded-for": "203.0.113.5, 198.51.100.9, 10.1.2.3"}
    # The nearest address that is not a trusted proxy: what the client's own proxy saw.
    assert identity.client_ip("10.0.0.1", headers) == "198.51.100.9"
    assert identity.client_ip("192.0.2.1", headers) == "192.0.2.1"  # not a trusted peer
    assert identity.client_ip("::1", {}) == "::1"
    assert identity.client_ip("10.0.0.1", {"x-forwarded-for": "garbage"}) == "10.0.0.1"
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Identity(secret_key=b"k", ip_salt=b"s", trusted_proxies=["not-an-ip"])


def test_cookie_signature() -> None:
    identity = Identity(secret_key=b"one", ip_salt=b"s")
    cookie = identity.new_cookie()
    voter_id = identity.verify_cookie(cookie)
    assert voter_id and cookie.startswith(voter_id + ".")
    other = Identity(secret_key=b"two", ip_salt=b"s")
    assert other.verify_cookie(cookie) is None  # another deployment's key
    for forged in ("i-am-somebody-else", voter_id + ".AAAA", "." + cookie.split(".")[1], ""):
        assert identity.verify_cookie(forged) is None
    unsigned = identity.voter({VOTER_COOKIE: "i-am-somebody-else"}, "192.0.2.1", {}, "sess")
    assert unsigned.id != "i-am-somebody-else" and "sess" not in unsigned.id
    assert unsigned == identity.voter({}, "192.0.2.1", {}, "sess")  # one session, one voter


def test_oversized_bodies_are_refused_before_they_are_read(pair: Pair) -> None:
    join = pair.one.url + "/gradio_api/queue/join"
    big = b"x" * (300 * 1024)
    response = httpx.post(join, content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(64):
            yield b"y" * 16384

    response = httpx.post(join, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    # The page takes no files: Gradio's upload route would host anyone's.
    upload = httpx.post(pair.one.url + "/gradio_api/upload", files={"files": ("x.html", b"<b>")})
    assert upload.status_code == 403 and "no file uploads" in upload.json()["error"]
    assert httpx.get(pair.one.url + "/api/health").status_code == 200


def test_limits_hold_across_two_processes_sharing_redis(pair: Pair) -> None:
    if pair.redis is None:
        pytest.skip("no Redis at 127.0.0.1:6379: limits shared between processes not tested")
    from gradio_client.exceptions import AppError

    # One voter (one signed cookie, valid in both processes: they share the database's key).
    cookie = httpx.get(pair.one.url + "/").cookies[VOTER_COOKIE]
    headers = {"Cookie": f"{VOTER_COOKIE}={cookie}"}
    ask(pair.one.url, "first", headers)
    ask(pair.two.url, "second", headers)
    ask(pair.one.url, "third", headers)
    with pytest.raises(AppError, match="Slow down: this arena takes at most 3 prompts a minute"):
        ask(pair.two.url, "fourth", headers)
    ask(pair.two.url, "someone else")  # another voter is not held back


# -- §1 identity leaks ---------------------------------------------------------------------------


def test_leak_matching_rules() -> None:
    rules = rules_for(["hostile-alpha", "Alpha Labs", "Meta", "Zorblax"])
    assert rules.find("I was trained by Meta.") == {"Meta"}
    assert rules.find("Check the metadata and the meta-analysis.") == set()
    assert rules.find("hos\u200btile-alpha made by Alp\u200bha Labs") == {
        "hostile-alpha",
        "Alpha Labs",
    }
    assert rules.find("I am Claude, made by Anthropic") == {"Claude", "Anthropic"}
    assert rules.find("ＣｈａｔＧＰＴ here") == {"ChatGPT"}  # full-width letters, NFKC
    assert rules.find("Runs in O(1); o1 = o2 + 1") == set()  # a short name alone is not a name
    assert rules.find("I am o1, a reasoning model") == {"o1"}
    assert rules.find("try o1-mini") == {"o1"}
    assert rules_for([], builtin=False).find("I am Claude") == set()
    # What the page shows, however it is spelled (review of issue 8): markup, entities, other
    # separators and dashes, look-alike letters, accents.
    for evasion in (
        "Zor**blax**",
        "Zorbl&#97;x",
        "Zor<span>blax</span>",
        "ZorBlax",
        "hostile alpha",
        "hostile_alpha",
        "hostile\u2011alpha",
        "hostile-\nalpha",
        "alpha labs",
    ):
        assert rules.find(evasion), evasion
    assert rules.find("I am \u0421laude, a model by Cla\u0301ude's makers") == {"Claude"}
    assert rules.find("snake_case_meta and _metadata_") == set()


async def test_leak_in_answer_is_flagged_and_prompt_is_not(demo_url: str, sqlite_url: str) -> None:
    # The demo models repeat the first eight words of the prompt in their answers.
    data = demo_config_data(demo_url, {"demo-terse": "terse", "demo-verbose": "verbose"})
    data["models"][0]["aliases"] = ["Zorblax"]
    svc = service(sqlite_url, data)
    voter = Voter("v")
    said = (await play(svc, voter, "Tell me about Zorblax please"))[-1]
    battle = svc.store.battle(said.battle_id)
    assert battle.flags["identity_leak"] == ["a", "b"]
    assert battle.flags["identity_leak_terms"] == {"a": ["Zorblax"], "b": ["Zorblax"]}
    # The battle is still played to the end and revealed after the vote.
    reveal = await svc.vote(said.battle_id, voter, "tie")
    assert {reveal.a.model, reveal.b.model} == {"demo-terse", "demo-verbose"}
    # Names in the prompt past what the answers repeat, and ordinary words, flag nothing.
    quiet = await play(svc, voter, "Please write a short poem about metadata, not Claude or Meta")
    assert "identity_leak" not in svc.store.battle(quiet[-1].battle_id).flags


def test_streaming_scanner_finds_a_name_split_across_chunks() -> None:
    rules = rules_for(["Arena Demo Lab"], builtin=False)
    scanner = rules.scanner()
    text = "Hello! " * 50 + "I come from Arena Demo Lab, and metadata is fine."
    for end in range(1, len(text) + 1, 3):
        scanner.feed(text[:end])
    scanner.feed(text, final=True)
    assert scanner.found == {"Arena Demo Lab"}
    late = rules.scanner()
    late.feed("made by Arena Demo")
    late.feed("made by Arena Demo Labs-ish", final=True)  # a longer word: not the name
    assert late.found == set()


# -- §5 moderation -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moderation_url() -> Iterator[str]:
    """A moderation endpoint in the OpenAI shape: flags 'forbidden', fails on 'crash'."""
    seen: list[str] = []

    async def moderations(request: Request) -> JSONResponse:
        body = await request.json()
        text = body["input"]
        seen.append(text)
        if "crash" in text:
            return JSONResponse({"error": "down"}, status_code=503)
        flagged = "forbidden" in text
        return JSONResponse(
            {
                "id": "modr-1",
                "model": body.get("model", "guard"),
                "results": [
                    {
                        "flagged": flagged,
                        "categories": {"violence": flagged, "hate": False},
                        "category_scores": {"violence": 0.9 if flagged else 0.01, "hate": 0.0},
                    }
                ],
            }
        )

    app = Starlette(routes=[Route("/v1/moderations", moderations, methods=["POST"])])
    with serve(app, "/v1/moderations") as url:
        yield url + "/v1/moderations"


def moderation_events(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(db.moderation_events)).all())


async def test_moderation_blocks_before_any_model_is_called(
    demo_url: str, sqlite_url: str, moderation_url: str
) -> None:
    data = demo_config_data(demo_url)
    data["moderation"] = {"url": moderation_url, "on_error": "closed"}
    svc = service(sqlite_url, data)
    with pytest.raises(TurnRejected, match=r"content policy.*violence"):
        await play(svc, Voter("v", ip_hash("192.0.2.4")), "something forbidden")
    assert counts(svc.store.engine)["battles"] == 0
    [event] = moderation_events(svc.store.engine)
    assert event.action == "blocked" and event.categories == ["violence"]
    assert event.content == "something forbidden" and event.ip_hash == ip_hash("192.0.2.4")
    # Closed: a failed check refuses the turn, and says so.
    with pytest.raises(TurnRejected, match="could not be checked"):
        await play(svc, Voter("v"), "crash please")
    assert counts(svc.store.engine)["battles"] == 0
    views = await play(svc, Voter("v"), "a fine question")
    # A follow-up is checked too.
    with pytest.raises(TurnRejected, match="content policy"):
        async for _ in svc.follow_up(views[-1].battle_id, Voter("v"), "now forbidden"):
            pass
    assert moderation_events(svc.store.engine)[-1].battle_id == views[-1].battle_id


async def test_moderation_fails_open_and_can_keep_no_text(
    demo_url: str, sqlite_url: str, moderation_url: str
) -> None:
    data = demo_config_data(demo_url)
    data["moderation"] = {"url": moderation_url, "on_error": "open", "store_text": False}
    svc = service(sqlite_url, data)
    views = await play(svc, Voter("v"), "crash please")  # the endpoint fails: let through
    assert views[-1].a[-1].done
    with pytest.raises(TurnRejected):
        await play(svc, Voter("v"), "forbidden again")
    unchecked, blocked = moderation_events(svc.store.engine)
    assert unchecked.action == "unchecked" and "503" in unchecked.reason
    assert blocked.action == "blocked" and blocked.content is None


# -- §7 administration ---------------------------------------------------------------------------


TOKEN = "s3cret-admin-token"


def admin_client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app.asgi, client=("192.0.2.50", 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://arena")


ADMIN_ROUTES = [
    ("POST", "/api/v1/admin/battles/x/flag"),
    ("DELETE", "/api/v1/admin/battles/x/flag"),
    ("POST", "/api/v1/admin/voters/x/flag"),
    ("DELETE", "/api/v1/admin/voters/x/flag"),
    ("POST", "/api/v1/admin/bans"),
    ("DELETE", "/api/v1/admin/bans/1.2.3.4"),
    ("POST", "/api/v1/admin/reload"),
    ("POST", "/api/v1/admin/ratings"),
    ("GET", "/api/v1/admin/nothing-here"),
]


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_admin_routes_need_the_token(
    token: str | None, demo_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        config_path=write_config(tmp_path, demo_config_data(demo_url)),
        database_url=sqlite_url,
        admin_token=None if token is None else Secret(token),
    )
    app = create_app(settings, with_ui=False)
    async with admin_client(app) as client:
        for method, path in ADMIN_ROUTES:
            for headers in (
                {},
                {"authorization": "Bearer wrong"},
                {"authorization": f"Basic {TOKEN}"},
                {"authorization": f"Bearer {TOKEN}x"},
                {"authorization": "Bearer "},
            ):
                response = await client.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
            if token is None:  # no token configured: nothing opens the admin routes
                response = await client.request(
                    method, path, headers={"authorization": f"Bearer {TOKEN}"}
                )
                assert response.status_code == 401


async def test_admin_flags_bans_and_reloads(
    demo_url: str, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path, demo_config_data(demo_url))
    settings = Settings(
        config_path=path, database_url=sqlite_url, admin_token=Secret(TOKEN), ip_salt=Secret(SALT)
    )
    app = create_app(settings, with_ui=False)
    auth = {"authorization": f"Bearer {TOKEN}"}
    voter = Voter("v1", ip_hash("192.0.2.9"))
    views = await play(app.battles, voter, "hello")
    battle_id = views[-1].battle_id
    async with admin_client(app) as client:
        r = await client.post(
            f"/api/v1/admin/battles/{battle_id}/flag", headers=auth, json={"reason": "spam"}
        )
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert app.store.battle(battle_id).flags["flagged"]["reason"] == "spam"
        r = await client.delete(f"/api/v1/admin/battles/{battle_id}/flag", headers=auth)
        assert "flagged" not in app.store.battle(battle_id).flags
        r = await client.post("/api/v1/admin/battles/nope/flag", headers=auth)
        assert r.status_code == 404 and r.json()["parameter"] == "battle"
        r = await client.post("/api/v1/admin/voters/v1/flag", headers=auth, json={"reason": 5})
        assert r.status_code == 400 and r.json()["parameter"] == "reason"
        r = await client.post("/api/v1/admin/voters/v1/flag", headers=auth)
        assert r.status_code == 200
        for bad in ("not an ip", "999.1.1.1", "fe80::1%eth0"):
            r = await client.post("/api/v1/admin/bans", headers=auth, json={"ip": bad})
            assert r.status_code == 400 and r.json()["parameter"] == "ip"
        r = await client.post(
            f"/api/v1/admin/battles/{battle_id}/flag",
            headers={**auth, "content-type": "application/json"},
            content=b'{"reason": "\\ud800"}',  # a lone surrogate, as JSON allows
        )
        assert r.status_code == 400 and r.json()["parameter"] == "reason"
        r = await client.post("/api/v1/admin/bans", headers=auth, json={"ip": "192.0.2.9"})
        assert r.json()["added"] is True
        with pytest.raises(Banned):
            await play(app.battles, voter, "again")
        with pytest.raises(Banned):
            await app.battles.vote(battle_id, voter, "a")
        # Raw addresses are never stored: only the salted hash.
        with app.engine.connect() as conn:
            assert conn.scalar(sa.select(db.bans.c.ip_hash)) == ip_hash("192.0.2.9")
        r = await client.delete("/api/v1/admin/bans/192.0.2.9", headers=auth)
        assert r.json()["removed"] is True
        await play(app.battles, voter, "welcome back")

        # Reload: a battle already running keeps its models; new battles use the new registry.
        running = app.battles.start(Voter("v2"), "a long one")
        first = await running.__anext__()
        data = demo_config_data(demo_url, {"demo-terse": "terse", "demo-chatty": "chatty"})
        write_config(tmp_path, data)
        r = await client.post("/api/v1/admin/reload", headers=auth)
        assert r.json()["models"] == ["demo-terse", "demo-chatty"]
        rest = [v async for v in running]
        assert rest[-1].state.value == "awaiting_vote" and first.battle_id == rest[-1].battle_id
        path.write_text("not toml [", encoding="utf-8")
        r = await client.post("/api/v1/admin/reload", headers=auth)
        assert r.status_code == 409 and "not valid TOML" in r.json()["error"]
        assert [m.name for m in app.config.models] == ["demo-terse", "demo-chatty"]
        # The review lists what the defences found; it is for administrators only.
        for i in range(20):  # a voter who walks away from all but two battles
            views = await play(app.battles, Voter("picky"), f"question {i}")
            if i < 2:
                await app.battles.vote(views[-1].battle_id, Voter("picky"), "a")
            else:
                await app.battles.abandon(views[-1].battle_id)
        r = await client.get("/api/v1/admin/review", headers=auth)
        review = r.json()
        assert review["selective_voters"] == [{"voter": "picky", "battles": 20, "voted": 2}]
        assert review["flagged_voters"] == 1 and review["bans"] == 0
        assert (await client.get("/api/v1/admin/review")).status_code == 401
    assert TOKEN not in caplog.text


def test_admin_cli(demo_url: str, sqlite_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ARENA_DATABASE_URL": sqlite_url,
        "ARENA_CONFIG": str(write_config(tmp_path, demo_config_data(demo_url))),
        "ARENA_IP_SALT": SALT,
    }

    def arena(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "arena", "admin", *args], env=env, capture_output=True, text=True
        )

    done = arena("ban", "192.0.2.77", "--reason", "flood")
    assert done.returncode == 0 and "banned" in done.stdout
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(db.bans.c.ip_hash)) == ip_hash("192.0.2.77")
    engine.dispose()
    bad = arena("ban", "192.0.2.777")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert arena("flag-voter", "nobody").stderr.strip() == "arena: error: no voter 'nobody'"


async def test_reload_reaches_every_process(demo_url: str, sqlite_url: str, tmp_path: Path) -> None:
    """`arena admin reload` (or a reload through one process's API) is announced in the
    database; every process on it follows."""
    from arena.app import RELOAD_KEY, watch_reloads
    from arena.config import Registry, load_config

    path = write_config(tmp_path, demo_config_data(demo_url))
    store = Store(db.make_engine(sqlite_url))
    other = Registry(load_config(path), path)  # another process's copy
    watcher = asyncio.create_task(watch_reloads(store, other, poll=0.05))
    try:
        await asyncio.sleep(0.2)
        write_config(tmp_path, demo_config_data(demo_url, {"demo-terse": "terse", "x": "verbose"}))
        env = {**os.environ, "ARENA_DATABASE_URL": sqlite_url, "ARENA_CONFIG": str(path)}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "arena", "admin", "reload"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and "2 models" in done.stdout, done.stderr
        for _ in range(100):
            if [m.name for m in other.current.models] == ["demo-terse", "x"]:
                break
            await asyncio.sleep(0.05)
        assert [m.name for m in other.current.models] == ["demo-terse", "x"]
        assert other.stamp == store.meta(RELOAD_KEY)
    finally:
        watcher.cancel()


# -- §8 privacy ----------------------------------------------------------------------------------


def test_production_mode_needs_configured_secrets(
    demo_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    data = demo_config_data(demo_url)
    data["security"] = {"production": True}
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError, match="ARENA_IP_SALT and ARENA_SECRET_KEY"):
        create_app(Settings(config_path=path, database_url=sqlite_url), with_ui=False)
    create_app(
        Settings(
            config_path=path,
            database_url=sqlite_url,
            ip_salt=Secret("salt"),
            secret_key=Secret("key"),
        ),
        with_ui=False,
    )


async def test_retention_deletes_text_and_keeps_votes(demo_url: str, sqlite_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    svc = service(sqlite_url, demo_config_data(demo_url))
    voter = Voter("v")
    old = (await play(svc, voter, "an old secret"))[-1].battle_id
    await svc.vote(old, voter, "a")
    with svc.store.engine.begin() as conn:  # a server's error text that echoed the prompt
        conn.execute(db.messages.update().values(error_detail="input: 'an old secret'"))
    pending = (await play(svc, voter, "still playing"))[-1].battle_id
    # Nothing is old enough yet; then everything finished before "tomorrow" is.
    assert svc.store.delete_text(datetime.now(UTC) - timedelta(days=1)) == 0
    assert svc.store.delete_text(datetime.now(UTC) + timedelta(days=1)) == 1
    rows = svc.store.messages(old)
    assert rows and all(r["content"] == "" and r["reasoning"] is None for r in rows)
    assert all(r["error_detail"] is None for r in rows)
    assert svc.store.vote(old) is not None  # the vote stays
    assert svc.store.battle(old).model_a  # and what the ratings need
    assert any(r["content"] for r in svc.store.messages(pending))  # awaiting a vote: kept
    assert svc.store.delete_text(datetime.now(UTC) + timedelta(days=1)) == 0  # done once


def test_raw_ips_are_not_in_the_database(demo_url: str, sqlite_url: str) -> None:
    svc = service(sqlite_url, demo_config_data(demo_url))

    async def go() -> None:
        voter = svc.identity.voter({}, "198.51.100.201", {}, "s")
        views = await play(svc, voter, "where am I")
        await svc.vote(views[-1].battle_id, voter, "b")

    asyncio.run(go())
    dump = "\n".join(svc.store.engine.raw_connection().driver_connection.iterdump())  # type: ignore[union-attr]
    assert "198.51.100.201" not in dump and ip_hash("198.51.100.201") in dump
