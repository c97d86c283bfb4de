"""Benchmark: many voters playing battles at once through the real app.

    python -m bench.battles [--voters 1 50 200] [--latency 0.3] [--tps 40] [--hol-voters 50]

Each voter is one browser session (its own Gradio session hash and voter cookie)
that asks a prompt, reads the streamed battle until it can vote, then votes. All
voters of a run start together. They speak Gradio's queue protocol directly over
one `httpx.AsyncClient` (POST /gradio_api/queue/join, then the server-sent events
of GET /gradio_api/queue/data), as the browser does, so hundreds fit in one
process. The arena (uvicorn + FastAPI + the Gradio queue, SQLite in a temporary
directory) and the demo model servers each run in a process of their own.

Every time is measured from the voter's click and set against a floor: how long
the demo server itself takes to produce that battle's answers (latency + tokens /
tokens-per-second, from the answers stored in the database). What is left is the
arena's overhead. A last run adds a very slow model on its own demo server and
checks that the fast side of its battles, and the battles without it, stay on time.
For where the time goes, each side's first-token overhead is split using the
database: before streaming (click to battle stored), upstream (the app's own
first-token time against the floor) and delivery (the rest, Gradio to the voter).

Exits non-zero if a battle fails, does not stream, or a vote is missing from the
database. Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.cookiejar
import importlib.metadata
import json
import multiprocessing
import os
import re
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from arena import db
from arena.cli import KEEP_ALIVE_SECONDS
from arena.cluster import SITE
from arena.config import NO_LIMITS

API = "/gradio_api"
VOTES = ("vote_a", "vote_b", "vote_tie", "vote_both_bad")
READY_TEXT = "Which answer is better?"
VOTED_TEXT = "Thanks for voting"
PLACEHOLDER = "…"
BATTLE_TIMEOUT = 120.0
# An answer counts as streamed when the voter saw it grow in at least this many updates.
MIN_GROWTH_UPDATES = 3
IDLE_SECONDS = 2.0

# Public name -> (demo model id, think_tags). The thinker opens <think> in its template.
FAST_MODELS: dict[str, tuple[str, str]] = {
    "demo-terse": ("terse", "auto"),
    "demo-verbose": ("verbose", "auto"),
    "demo-chatty": ("chatty", "auto"),
    "demo-reasoner": ("reasoner", "auto"),
    "demo-thinker": ("thinker", "opened"),
}
SLOW_MODEL = "demo-slow"  # the terse demo model behind a slow server

_TOPICS = (
    "structure a small web service",
    "learn a new programming language",
    "choose a database for a side project",
    "explain recursion to a beginner",
    "write a good commit message",
    "plan a week of study",
    "speed up a slow test suite",
    "pick names for functions",
)


# ---------------------------------------------------------------------------
# Servers, each in a process of its own


def _serve(kind: str, params: dict[str, Any], ports: Any) -> None:
    """Child process: build the app, bind port 0, report the port, serve until SIGTERM."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import uvicorn

    app: Any
    if kind == "demo":
        from arena.demo_models import create_demo_app

        app = create_demo_app(latency=params["latency"], tokens_per_second=params["tps"])
    else:
        from arena.app import create_app
        from arena.config import Settings, parse_config

        arena_config = parse_config(params["registry"], source="bench registry")
        settings = Settings(database_url=params["database_url"], config_path=Path("unused"))
        app = create_app(settings, config=arena_config).asgi
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    ports.put(sock.getsockname()[1])
    # As `arena serve` runs it (h11 and asyncio: uvloop and httptools are not installed).
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=KEEP_ALIVE_SECONDS if kind != "demo" else 5,  # 5: uvicorn's default
    )
    uvicorn.Server(uv_config).run(sockets=[sock])


@dataclass
class Server:
    name: str
    process: BaseProcess
    url: str

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        return process_cpu(self.pid)


@dataclass
class Pool:
    """Several app processes behind nginx (`--replicas N`): the shipped deploy/nginx/arena.conf,
    run as `arena cluster` runs it. Voters reach them through nginx, sticky by voter cookie."""

    name: str
    url: str
    members: list[Server]

    def cpu_seconds(self) -> float | None:
        each = [m.cpu_seconds() for m in self.members]
        return None if any(c is None for c in each) else sum(c or 0.0 for c in each)


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(name: str, kind: str, params: dict[str, Any], health: str) -> Iterator[Server]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    process = ctx.Process(target=_serve, args=(kind, params, ports), name=name, daemon=True)
    process.start()
    try:
        try:
            port = ports.get(timeout=120)
        except Exception:
            raise RuntimeError(f"{name} did not start") from None
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + health, timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or not process.is_alive():
                    raise RuntimeError(f"{name} did not answer on {url}{health}") from None
                time.sleep(0.1)
        yield Server(name, process, url)
    finally:
        process.terminate()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


@contextlib.contextmanager
def balancer(members: Sequence[Server], tmp: Path) -> Iterator[str]:
    """nginx in front of `members`, as `arena cluster` runs it; yields its URL."""
    from arena.cluster import find_nginx, nginx_child

    nginx = find_nginx()
    if nginx is None:
        raise RuntimeError("--replicas needs nginx (Debian: apt-get install nginx)")
    prefix = tmp / "nginx"
    prefix.mkdir(exist_ok=True)
    ports = [int(m.url.rsplit(":", 1)[1]) for m in members]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        listen = sock.getsockname()[1]
    front = nginx_child(nginx, prefix, ports, listen, SITE)
    front.start()
    try:
        front.wait_ready()
        yield f"http://127.0.0.1:{listen}"
    finally:
        front.stop()


# ---------------------------------------------------------------------------
# The registry and what the demo server alone would take


@dataclass(frozen=True)
class ModelSpec:
    name: str
    demo_id: str
    think_tags: str
    url: str
    latency: float


def registry(models: Sequence[ModelSpec]) -> dict[str, Any]:
    return {
        "arena": {"title": "Bench Arena", "demo": True, "max_turns": 3},
        "timeouts": {"connect": 5, "first_token": 60, "between_tokens": 30, "total": 300},
        # The ratings job reads ARENA_CONFIG in a child process, which a benchmark has not got.
        "ratings": {"interval_minutes": 0},
        # Hundreds of voters from one address: the abuse limits would refuse most of them.
        "limits": NO_LIMITS,
        "models": [
            {
                "name": m.name,
                "organization": "Arena demo",
                "license": "Apache-2.0",
                "think_tags": m.think_tags,
                "endpoints": [{"base_url": m.url + "/v1", "model": m.demo_id}],
            }
            for m in models
        ],
    }


def _words(text: str | None) -> int:
    """Tokens as the demo server counts them: whitespace-led words."""
    return len(re.findall(r"\S+", text or ""))


@dataclass(frozen=True)
class SideFloor:
    """When the demo server emits this side's answer, in seconds after the request."""

    model: str
    first_text: float  # first token of the answer proper
    last_text: float  # last token of the answer
    done: float  # end of the stream
    app_first_text: float | None  # the same first token as the app itself timed it


def side_floor(
    spec: ModelSpec, content: str, reasoning: str | None, answer_ms: float | None, delay: float
) -> SideFloor:
    before = _words(reasoning) + (1 if spec.think_tags == "opened" and reasoning else 0)
    pieces = before + _words(content)
    return SideFloor(
        model=spec.name,
        first_text=spec.latency + before * delay,
        last_text=spec.latency + max(0, pieces - 1) * delay,
        done=spec.latency + pieces * delay,
        app_first_text=None if answer_ms is None else answer_ms / 1000,
    )


@dataclass(frozen=True)
class StoredBattle:
    battle_id: str
    status: str
    outcome: str | None
    sides: dict[str, SideFloor]  # "a", "b"
    errors: tuple[str, ...]
    stored_at: float | None  # epoch seconds: the battle's prompt row was written


def _epoch(t: datetime | None) -> float | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def stored_battles(
    database_url: str, voter_ids: Sequence[str], specs: dict[str, ModelSpec], delay: float
) -> dict[str, StoredBattle]:
    """This run's battles by voter id, with the floors of their answers."""
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            b, v, m = db.battles, db.votes, db.messages
            rows = conn.execute(
                sa.select(b.c.id, b.c.voter_id, b.c.status, v.c.outcome)
                .select_from(b.outerjoin(v, v.c.battle_id == b.c.id))
                .where(b.c.voter_id.in_(list(voter_ids)))
            ).all()
            ids = [r.id for r in rows]
            answers = conn.execute(
                sa.select(
                    m.c.battle_id,
                    m.c.side,
                    m.c.model,
                    m.c.content,
                    m.c.reasoning,
                    m.c.answer_ms,
                    m.c.error,
                ).where(m.c.battle_id.in_(ids), m.c.role == "assistant", m.c.turn == 1)
            ).all()
            prompts = conn.execute(
                sa.select(m.c.battle_id, m.c.created_at).where(
                    m.c.battle_id.in_(ids), m.c.role == "user", m.c.turn == 1, m.c.side == "a"
                )
            ).all()
    finally:
        engine.dispose()
    sides: dict[str, dict[str, SideFloor]] = {}
    errors: dict[str, list[str]] = {}
    for a in answers:
        sides.setdefault(a.battle_id, {})[a.side] = side_floor(
            specs[a.model], a.content, a.reasoning, a.answer_ms, delay
        )
        if a.error:
            errors.setdefault(a.battle_id, []).append(a.error)
    stored_at = {p.battle_id: _epoch(p.created_at) for p in prompts}
    return {
        r.voter_id: StoredBattle(
            r.id,
            r.status,
            r.outcome,
            sides.get(r.id, {}),
            tuple(errors.get(r.id, ())),
            stored_at.get(r.id),
        )
        for r in rows
    }


# ---------------------------------------------------------------------------
# One voter, speaking Gradio's queue protocol


@dataclass(frozen=True)
class Endpoint:
    fn_index: int
    trigger_id: int | None


def endpoints(url: str) -> dict[str, Endpoint]:
    config = httpx.get(url + "/config", timeout=30).json()
    if config.get("protocol") != "sse_v3":
        raise RuntimeError(f"expected Gradio's sse_v3 protocol, got {config.get('protocol')!r}")
    found = {}
    for dep in config["dependencies"]:
        name = dep.get("api_name")
        if name in ("ask", *VOTES):
            targets = dep.get("targets") or [[None]]
            found[name] = Endpoint(int(dep["id"]), targets[0][0])
    missing = {"ask", *VOTES} - set(found)
    if missing:
        raise RuntimeError(f"the page has no {sorted(missing)} events")
    return found


def apply_diff(value: Any, edits: list[Any]) -> Any:
    """Gradio's streaming diff (replace/append/add/delete at a path), applied in place."""
    for action, path, new in edits:
        if not path:
            value = new if action == "replace" else value + new
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        last = path[-1]
        if action == "replace":
            target[last] = new
        elif action == "append":
            target[last] += new
        elif action == "add":
            if isinstance(target, list):
                target.insert(int(last), new)
            else:
                target[last] = new
        elif action == "delete":
            del target[int(last) if isinstance(target, list) else last]
        else:
            raise ValueError(f"unknown diff action {action!r}")
    return value


def answer_text(chat: Any) -> str:
    """The answer text a voter sees in one chatbot (not the reasoning box, not '…')."""
    if not isinstance(chat, list):
        return ""
    parts = []
    for message in chat:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        if message.get("metadata"):  # the collapsed "Thinking…" box
            continue
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        else:
            text = str(content or "")
        if text and text != PLACEHOLDER:
            parts.append(text)
    return "\n".join(parts)


class EventFailed(Exception):
    pass


async def run_event(
    client: httpx.AsyncClient,
    name: str,
    endpoint: Endpoint,
    data: list[Any],
    session: str,
    headers: dict[str, str],
    on_update: Callable[[list[Any]], None] | None = None,
) -> list[Any]:
    """Join the queue, read the session's event stream to completion; return the outputs."""
    body = {
        "data": data,
        "event_data": None,
        "fn_index": endpoint.fn_index,
        "trigger_id": endpoint.trigger_id,
        "session_hash": session,
    }
    phase = f"{name}: queue/join"
    try:
        joined = await client.post(API + "/queue/join", json=body, headers=headers)
        if joined.status_code != 200:
            raise EventFailed(f"{phase}: HTTP {joined.status_code} {joined.text[:200]}")
        event_id = joined.json()["event_id"]
        phase = f"{name}: queue/data"
        return await _read_events(client, phase, event_id, session, headers, on_update)
    except httpx.HTTPError as err:
        cause = err.__cause__ or err.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause and str(cause) else ""
        raise EventFailed(f"{phase}: {type(err).__name__} {err}{detail}".strip()) from err


async def _read_events(
    client: httpx.AsyncClient,
    phase: str,
    event_id: str,
    session: str,
    headers: dict[str, str],
    on_update: Callable[[list[Any]], None] | None,
) -> list[Any]:
    state: list[Any] | None = None
    params = {"session_hash": session}
    async with client.stream("GET", API + "/queue/data", params=params, headers=headers) as r:
        if r.status_code != 200:
            raise EventFailed(f"{phase}: HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            kind = msg.get("msg")
            if kind == "close_stream":
                break
            if kind == "unexpected_error":
                raise EventFailed(f"{phase}: unexpected error: {msg.get('message')}")
            if msg.get("event_id") != event_id:
                continue
            if kind == "process_generating":
                if not msg.get("success", True):
                    raise EventFailed(f"{phase}: failed while generating: {msg.get('output')}")
                out = msg["output"]["data"]
                if state is None:
                    state = out
                else:
                    state = [apply_diff(s, d) for s, d in zip(state, out, strict=True)]
                if on_update is not None:
                    on_update(state)
            elif kind == "process_completed":
                output = msg.get("output") or {}
                if not msg.get("success", True) or "error" in output:
                    raise EventFailed(f"{phase}: {str(output.get('error') or output)[:200]}")
                final: list[Any] = output.get("data") or []
                if on_update is not None and final:
                    on_update(final)
                return final
    raise EventFailed(f"{phase}: the stream closed before the event completed")


@dataclass
class Voter:
    index: int
    voter_id: str
    cookie: str = ""  # signed by the arena (arena.identity); the voter id is its first part
    clicked_at: float = 0.0  # epoch seconds
    t_first_text: dict[str, float] = field(default_factory=dict)  # side -> seconds
    t_last_text: dict[str, float] = field(default_factory=dict)
    growth: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    updates: int = 0
    t_ready: float | None = None
    vote_rtt: float | None = None
    error: str | None = None

    @property
    def t_first_any(self) -> float | None:
        return min(self.t_first_text.values()) if self.t_first_text else None

    @property
    def streamed(self) -> bool:
        return min(self.growth.values()) >= MIN_GROWTH_UPDATES


async def play(
    client: httpx.AsyncClient, eps: dict[str, Endpoint], voter: Voter, prompt: str, delay: float
) -> None:
    """One voter: ask, watch both answers stream, vote once the vote row shows."""
    await asyncio.sleep(delay)
    session = uuid.uuid4().hex
    headers = {"Cookie": f"arena_voter={voter.cookie}"}
    texts = {"a": "", "b": ""}
    voter.clicked_at = time.time()
    t0 = time.perf_counter()

    def on_update(outputs: list[Any]) -> None:
        now = time.perf_counter() - t0
        voter.updates += 1
        for side, chat in (("a", outputs[0]), ("b", outputs[1])):
            text = answer_text(chat)
            if text != texts[side]:
                texts[side] = text
                voter.growth[side] += 1
                voter.t_first_text.setdefault(side, now)
                voter.t_last_text[side] = now
        status = outputs[5] if len(outputs) > 5 else ""
        if voter.t_ready is None and isinstance(status, str) and READY_TEXT in status:
            voter.t_ready = now

    try:
        async with asyncio.timeout(BATTLE_TIMEOUT):
            final = await run_event(
                client, "ask", eps["ask"], [prompt, None], session, headers, on_update
            )
            status = final[5] if len(final) > 5 else ""
            if voter.t_ready is None or not isinstance(status, str) or READY_TEXT not in status:
                raise EventFailed(f"battle not ready to vote: {str(status)[:120]!r}")
            vote = VOTES[voter.index % len(VOTES)]
            t1 = time.perf_counter()
            final = await run_event(client, vote, eps[vote], [None], session, headers)
            voter.vote_rtt = time.perf_counter() - t1
            status = final[5] if len(final) > 5 else ""
            if not isinstance(status, str) or VOTED_TEXT not in status:
                raise EventFailed(f"vote not acknowledged: {str(status)[:120]!r}")
    except EventFailed as err:
        voter.error = str(err)[:300]
    except Exception as err:  # one voter's surprise must not end the run
        voter.error = f"{type(err).__name__}: {err}"[:300]


async def run_voters(
    url: str, eps: dict[str, Endpoint], prefix: str, n: int, ramp: float, keep_alive: bool
) -> tuple[list[Voter], float]:
    """Start n voters together (or spread over `ramp` seconds); return them and the wall time."""
    voters = [Voter(i, f"{prefix}-{i}") for i in range(n)]
    # No cookie jar: each voter sends its own cookie, as separate browsers would.
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # A fresh connection per request by default. Pooled connections hit uvicorn's keep-alive
    # race once its loop lags: it closes an idle connection just as the client reuses it,
    # and the request is reset. Browsers retry such requests unseen; this client would not.
    keep = 2 * n + 10 if keep_alive else 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=keep)
    timeout = httpx.Timeout(60.0, connect=30.0)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=timeout, cookies=jar
    ) as client:
        for v in voters:  # a signed cookie each, as a browser gets on its first page load
            v.cookie = (await client.get("/api/health")).cookies["arena_voter"]
            v.voter_id = v.cookie.split(".")[0]
        start = time.perf_counter()
        await asyncio.gather(
            *(
                play(
                    client,
                    eps,
                    v,
                    f"Voter {v.index}: how would you {_TOPICS[v.index % len(_TOPICS)]}?",
                    ramp * v.index / n,
                )
                for v in voters
            )
        )
        wall = time.perf_counter() - start
    return voters, wall


# ---------------------------------------------------------------------------
# Figures


def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dist(values: Sequence[float], unit: str = "s", scale: float = 1.0, signed: bool = False) -> str:
    if not values:
        return "n/a"
    sign = "+" if signed else ""
    f = f"{{:{sign}.{2 if scale == 1 else 0}f}}"
    parts = [f"p50 {f.format(pct(values, 0.5) * scale)}"]
    parts.append(f"p95 {f.format(pct(values, 0.95) * scale)}")
    parts.append(f"max {f.format(max(values) * scale)}")
    return "  ".join(parts) + f" {unit}"


def where_it_goes(items: Sequence[tuple[Voter, StoredBattle, str]]) -> str:
    """Split a side's first-token overhead: before streaming, upstream, delivery (p50/p95)."""
    before, upstream, delivery = [], [], []
    for v, s, side in items:
        x = s.sides[side]
        if s.stored_at is None or x.app_first_text is None or side not in v.t_first_text:
            continue
        pre = s.stored_at - v.clicked_at
        before.append(pre)
        upstream.append(x.app_first_text - x.first_text)
        delivery.append(v.t_first_text[side] - pre - x.app_first_text)
    if not before:
        return "n/a"

    def p(xs: list[float]) -> str:
        return f"{pct(xs, 0.5) * 1000:.0f}/{pct(xs, 0.95) * 1000:.0f}"

    return (
        f"before streaming {p(before)}, upstream {p(upstream)}, delivery {p(delivery)} ms (p50/p95)"
    )


@dataclass
class RunResult:
    label: str
    n: int
    completed: int
    errors: list[str]
    votes: int
    streamed: int
    ok: bool
    # Overheads over the floor of the battles without a slow model, for comparison.
    first_over: list[float] = field(default_factory=list)
    ready_over: list[float] = field(default_factory=list)


def ms(values: Sequence[float]) -> str:
    return dist(values, "ms", 1000, signed=True)


class Report:
    def __init__(self, voters: list[Voter], stored: dict[str, StoredBattle], on_time: float):
        self.stored = stored
        self.on_time = on_time
        self.done = [v for v in voters if v.error is None]

    def floors(self, v: Voter) -> StoredBattle | None:
        s = self.stored.get(v.voter_id)
        return s if s is not None and len(s.sides) == 2 else None

    def late(self, overs: Sequence[float]) -> str:
        late = sum(1 for x in overs if x > self.on_time)
        return f"more than {self.on_time:g} s over the floor: {late}/{len(overs)}"

    def battles(self, group: list[Voter]) -> tuple[list[float], list[float]]:
        """First answer token and ready-to-vote, against the floor; return the overheads."""
        rows = [(v, s) for v in group if (s := self.floors(v)) is not None]
        first, first_floor, first_over = [], [], []
        ready, ready_floor, ready_over = [], [], []
        for v, s in rows:
            ff = min(x.first_text for x in s.sides.values())
            rf = max(x.done for x in s.sides.values())
            first_floor.append(ff)
            ready_floor.append(rf)
            if v.t_first_any is not None:
                first.append(v.t_first_any)
                first_over.append(v.t_first_any - ff)
            if v.t_ready is not None:
                ready.append(v.t_ready)
                ready_over.append(v.t_ready - rf)
        sides = [(v, s, side) for v, s in rows for side in s.sides]
        print(f"  first answer token   {dist(first)}")
        print(f"    demo floor         {dist(first_floor)}")
        print(f"    overhead           {ms(first_over)}")
        print(f"    per side: {where_it_goes(sides)}")
        print(f"  ready to vote        {dist(ready)}")
        print(f"    demo floor         {dist(ready_floor)}")
        print(f"    overhead           {ms(ready_over)}")
        print(f"    {self.late(ready_over)}")
        return first_over, ready_over

    def fast_sides(self, group: list[Voter], slow: str) -> None:
        """In battles with the slow model, the fast side alone: it must not wait."""
        sides, first_over, last, last_floor, last_over, slow_first_over = [], [], [], [], [], []
        for v in group:
            s = self.floors(v)
            assert s is not None
            for side, x in s.sides.items():
                if side not in v.t_first_text:
                    continue
                if x.model == slow:
                    slow_first_over.append(v.t_first_text[side] - x.first_text)
                    continue
                sides.append((v, s, side))
                first_over.append(v.t_first_text[side] - x.first_text)
                last.append(v.t_last_text[side])
                last_floor.append(x.last_text)
                last_over.append(v.t_last_text[side] - x.last_text)
        print(f"  fast side: first answer token overhead {ms(first_over)}")
        print(f"    per side: {where_it_goes(sides)}")
        print(f"  fast side: whole answer shown  {dist(last)}")
        print(f"    demo floor                   {dist(last_floor)}")
        print(f"    overhead                     {ms(last_over)}")
        print(f"    {self.late(last_over)}")
        print(f"  slow side: first answer token overhead {ms(slow_first_over)}")
        ready = [v.t_ready for v in group if v.t_ready is not None]
        print(f"  battle ready to vote           {dist(ready)}")


def report(
    label: str,
    n: int,
    voters: list[Voter],
    stored: dict[str, StoredBattle],
    wall: float,
    cpu: dict[str, float | None],
    slow: str | None = None,
    on_time: float = 1.0,
) -> RunResult:
    r = Report(voters, stored, on_time)
    done = r.done
    errors = []
    for v in voters:
        if v.error:
            s = stored.get(v.voter_id)
            why = f" [battle {s.status}: {'; '.join(s.errors)}]" if s and s.errors else ""
            errors.append(f"{v.voter_id}: {v.error}{why}")
    votes = sum(1 for s in stored.values() if s.outcome is not None)
    streamed = sum(1 for v in done if v.streamed)
    print(f"\n== {label} ==")
    print(
        f"battles completed {len(done)}/{n}   errors {len(errors)}   "
        f"votes in database {votes}/{n}   wall {wall:.1f} s   "
        f"({len(done) / wall:.1f} battles/s)"
    )
    for e in errors[:5]:
        print(f"  error: {e}")
    if len(errors) > 5:
        print(f"  … and {len(errors) - 5} more")
    growth = [float(min(v.growth.values())) for v in done]
    if done:
        updates = [float(v.updates) for v in done]
        print(
            f"updates per battle   p50 {pct(updates, 0.5):.0f}  min {min(updates):.0f};  "
            f"answer grew in ≥{MIN_GROWTH_UPDATES} updates on both sides: "
            f"{streamed}/{len(done)} (fewest {min(growth):.0f})"
        )
    if slow is None:
        first_over, ready_over = r.battles(done)
    else:

        def has_slow(v: Voter) -> bool:
            s = r.floors(v)
            return s is not None and any(x.model == slow for x in s.sides.values())

        without = [v for v in done if r.floors(v) is not None and not has_slow(v)]
        with_slow = [v for v in done if has_slow(v)]
        print(f"battles without {slow} ({len(without)}):")
        first_over, ready_over = r.battles(without)
        print(f"battles with {slow} ({len(with_slow)}):")
        r.fast_sides(with_slow, slow)

    rtts = [v.vote_rtt for v in done if v.vote_rtt is not None]
    if rtts:
        print(
            f"vote round-trip      p50 {pct(rtts, 0.5) * 1000:.0f}  "
            f"p95 {pct(rtts, 0.95) * 1000:.0f}  max {max(rtts) * 1000:.0f} ms"
        )
    parts = []
    app_cpu = cpu.get("app")
    if app_cpu is not None:
        sent = sum(v.updates for v in voters)
        per_update = f", {app_cpu / sent * 1000:.1f} ms per update streamed" if sent else ""
        parts.append(
            f"app {app_cpu:.1f} s ({app_cpu / n * 1000:.0f} ms/battle{per_update}, "
            f"{app_cpu / wall * 100:.0f}% of one core over the run)"
        )
    members = sorted(k for k in cpu if k.startswith("app") and k != "app")
    if members:  # replicas: each process's share (the battles spread by voter cookie)
        each = [f"{c:.1f}" if (c := cpu[k]) is not None else "?" for k in members]
        parts.append(f"per process {' / '.join(each)} s")
    if cpu.get("demo") is not None:
        parts.append(f"demo servers {cpu['demo']:.1f} s")
    parts.append(f"load generator {cpu['client']:.1f} s")
    print("CPU                  " + ";  ".join(parts))
    ok = (
        len(done) == n
        and votes == n
        and len(stored) == n
        and (not growth or pct(growth, 0.5) >= MIN_GROWTH_UPDATES)
    )
    return RunResult(label, n, len(done), errors, votes, streamed, ok, first_over, ready_over)


def run(
    label: str,
    app: Server | Pool,
    demos: Sequence[Server],
    prefix: str,
    n: int,
    args: argparse.Namespace,
    specs: dict[str, ModelSpec],
    database_url: str,
    slow: str | None = None,
) -> RunResult:
    """Play n battles at once against a running app, then read them back from the database."""
    eps = endpoints(app.url)

    def cpu() -> dict[str, float | None]:
        d = [s.cpu_seconds() for s in demos]
        demo = None if any(x is None for x in d) else sum(x or 0.0 for x in d)
        found = {"app": app.cpu_seconds(), "demo": demo, "client": time.process_time()}
        for i, member in enumerate(getattr(app, "members", [])):
            found[f"app{i + 1}"] = member.cpu_seconds()
        return found

    before = cpu()
    voters, wall = asyncio.run(run_voters(app.url, eps, prefix, n, args.ramp, args.keep_alive))
    after = cpu()
    used = {
        k: None if before[k] is None or after[k] is None else (after[k] or 0.0) - (before[k] or 0.0)
        for k in before
    }
    stored = stored_battles(database_url, [v.voter_id for v in voters], specs, 1.0 / args.tps)
    return report(label, n, voters, stored, wall, used, slow=slow, on_time=args.on_time)


def warm_up(app: Server | Pool, eps: dict[str, Endpoint], prefix: str, keep_alive: bool) -> None:
    (voter,), _ = asyncio.run(run_voters(app.url, eps, prefix, 1, 0.0, keep_alive))
    if voter.error:
        raise RuntimeError(f"warm-up battle failed: {voter.error}")


# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.battles", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    p.add_argument(
        "--voters",
        type=int,
        nargs="+",
        default=[1, 50, 200],
        metavar="N",
        help="concurrent voters per run (default: 1 50 200)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="app processes; above 1 they run behind nginx as `arena cluster` runs them "
        "(deploy/nginx/arena.conf), sticky by voter cookie",
    )
    p.add_argument("--latency", type=float, default=0.3, help="demo first-token latency, s")
    p.add_argument("--tps", type=float, default=40.0, help="demo tokens per second")
    p.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="spread the voters' clicks over this many seconds (default: all at once)",
    )
    p.add_argument(
        "--hol-voters",
        type=int,
        default=50,
        help="voters for the head-of-line run, compared with the run of as many voters "
        "without the slow model (default: 50; 0: skip it)",
    )
    p.add_argument(
        "--slow-latency",
        type=float,
        default=5.0,
        help="first-token latency of the slow model in the head-of-line run, s",
    )
    p.add_argument(
        "--on-time",
        type=float,
        default=1.0,
        help="count answers more than this many seconds over their floor",
    )
    p.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse connections between requests (exposes uvicorn's keep-alive close race "
        "under load as connection resets)",
    )
    args = p.parse_args(argv)
    if any(n < 1 for n in args.voters) or args.hol_voters < 0 or args.tps <= 0:
        p.error("voters must be positive and --tps above zero")
    if args.replicas < 1:
        p.error("--replicas must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    versions = ", ".join(
        f"{pkg} {importlib.metadata.version(pkg)}" for pkg in ("gradio", "uvicorn", "httpx")
    )
    print("Arena battle benchmark: N voters click at once; each asks one prompt, reads both")
    print("streamed answers until the vote buttons show, then votes.")
    print(
        f"  voters per run {args.voters}, all at once"
        + (f" (spread over {args.ramp:g} s)" if args.ramp else "")
    )
    print(
        f"  demo models: latency {args.latency:g} s, {args.tps:g} tokens/s, "
        f"{len(FAST_MODELS)} models ({', '.join(FAST_MODELS)})"
    )
    print(
        "  client: one httpx.AsyncClient speaking Gradio's queue protocol "
        "(POST queue/join, SSE queue/data); a session and voter cookie per voter; "
        + ("connections reused" if args.keep_alive else "a new connection per request")
    )
    print(
        "  app: uvicorn + FastAPI + Gradio queue in its own process, SQLite (WAL) in a temp dir;"
        " demo servers in their own processes"
    )
    print(f"  {versions}, {os.cpu_count()} CPUs")
    print(
        "  floor = what the demo server alone needs for that battle's answers "
        "(latency + tokens/tps); overhead = measured - floor"
    )
    print(
        "  per side: before streaming = click -> battle stored; upstream = the app's own "
        "first-token time - floor; delivery = the rest (Gradio -> voter)"
    )
    sys.stdout.flush()

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'arena.db'}"
        db.upgrade(database_url)

        @contextlib.contextmanager
        def arena(name: str, specs: dict[str, ModelSpec]) -> Iterator[Server | Pool]:
            params = {
                "registry": registry(list(specs.values())),
                "database_url": database_url,
            }
            t = time.perf_counter()
            with contextlib.ExitStack() as stack:
                members = [
                    stack.enter_context(serve(f"{name}-{i + 1}", "app", params, "/api/health"))
                    for i in range(args.replicas)
                ]
                started = time.perf_counter() - t
                for member in members:
                    warm_up(member, endpoints(member.url), f"warmup-{member.name}", args.keep_alive)
                app: Server | Pool = members[0]
                if args.replicas > 1:
                    app = Pool(name, stack.enter_context(balancer(members, Path(tmp))), members)
                idle = ""
                cpu0 = app.cpu_seconds()
                time.sleep(IDLE_SECONDS)
                cpu1 = app.cpu_seconds()
                if cpu0 is not None and cpu1 is not None:
                    idle = f"; idle, it uses {(cpu1 - cpu0) / IDLE_SECONDS * 100:.0f}% of a core"
                what = (
                    f"{name} ({args.replicas} processes behind nginx)"
                    if args.replicas > 1
                    else name
                )
                print(f"\n({what} started in {started:.1f} s; a warm-up battle played{idle})")
                yield app

        demo_params = {"latency": args.latency, "tps": args.tps}
        with serve("demo", "demo", demo_params, "/health") as demo:
            specs = {
                name: ModelSpec(name, demo_id, tags, demo.url, args.latency)
                for name, (demo_id, tags) in FAST_MODELS.items()
            }
            with arena("arena", specs) as app:
                for i, n in enumerate(args.voters):
                    label = f"{n} voter{'s' if n != 1 else ''} at once"
                    results.append(run(label, app, [demo], f"run{i}", n, args, specs, database_url))
            if args.hol_voters:
                slow_params = {"latency": args.slow_latency, "tps": args.tps}
                with serve("slow-demo", "demo", slow_params, "/health") as slow_demo:
                    specs[SLOW_MODEL] = ModelSpec(
                        SLOW_MODEL, "terse", "auto", slow_demo.url, args.slow_latency
                    )
                    with arena("arena-with-slow-model", specs) as app:
                        label = (
                            f"head of line: {args.hol_voters} voters at once, one more model "
                            f"({SLOW_MODEL}) with {args.slow_latency:g} s latency"
                        )
                        hol = run(
                            label,
                            app,
                            [demo, slow_demo],
                            "hol",
                            args.hol_voters,
                            args,
                            specs,
                            database_url,
                            slow=SLOW_MODEL,
                        )
                        results.append(hol)
                base = next((r for r in results if r.n == hol.n and r is not hol), None)
                if base is not None:
                    print(
                        f"battles without {SLOW_MODEL}, against the {base.n}-voter run "
                        "where no model was slow:"
                    )
                    print(f"  first answer token overhead  here {ms(hol.first_over)}")
                    print(f"                             before {ms(base.first_over)}")
                    print(f"  ready to vote overhead       here {ms(hol.ready_over)}")
                    print(f"                             before {ms(base.ready_over)}")

    print("\n== summary ==")
    for r in results:
        mark = "ok" if r.ok else "FAILED"
        print(
            f"  {mark:6} {r.label}: {r.completed}/{r.n} battles, {len(r.errors)} errors, "
            f"{r.votes}/{r.n} votes stored, {r.streamed} streamed"
        )
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as err:  # a server did not start, or the warm-up battle failed
        print(f"bench.battles: {err}", file=sys.stderr)
        sys.exit(2)
