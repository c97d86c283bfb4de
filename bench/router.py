"""Benchmark: what the router adds to a streamed answer (issue 7).

    python -m bench.router [--streams 1,100,500] [--tps 40] [--rounds 3] [--json]

The demo model server runs in a process of its own (`python -m arena demo-models --latency 0
--tps R`: the model's own time to first token is zero), so that this process holds only the
router and the client that times it. The same answers are read three ways, each by N streams in
flight at once:

- direct: a bare `httpx` streaming client (POST, `aiter_lines`, `json.loads` of each event):
  the least any Python client in this process must do to read the stream. It is the baseline.
- adapter: the bare `OpenAIProvider` on the same endpoint (timeouts, think-tag splitting, chunks).
- router: `Router.provider(entry).stream_chat`, the path of a battle: the `EndpointPool` (one
  replica here) over the same `OpenAIProvider`.

router - direct is what the routing stack adds; router - adapter is the pool's own share.

Measurement. Each run ("phase") uses one path only. N workers each stream one answer after
another; their starts are spread over one answer's length, so that N are in flight at every
moment and they do not start in step. A phase measures the streams started once every worker
has started and at least one answer's length has passed (the ramp, whose streams warm the
connections), for `--seconds` (and at least `--min-streams` streams). Phases alternate: in
each round the paths run in turn, in the reverse order in the next round, so slow drift of the
machine falls on all of them.
Every path has its own `httpx.AsyncClient` with the app's settings. Times are `perf_counter`
in this process: time to first token (TTFT) from the call to the first text, and the delivered
rate, the tokens of the measured streams over their summed durations (start to last token).
The differences are between percentiles (the streams are not paired), not percentiles of
differences. Each phase also reports the CPU this process, the demo server and every other
process of the machine used (from /proc), and this process's CPU per token read: when this
process nears a full core, time to first token is mostly waiting for its event loop.

A last run kills one of two replicas (SIGKILL) while N streams go through the router with the
health watcher running: an answer that failed after text had streamed is allowed to fail (it
is never retried); one that had not streamed text must have been retried on the other replica
and completed.

Exits non-zero if any answer failed in the measured runs, or if an answer that had not
streamed text failed in the kill run. Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from arena.config import ArenaConfig, ModelEntry, parse_config
from arena.providers.base import ChatMessage, ChatRequest, Provider
from arena.providers.openai import OpenAIProvider
from arena.router import Router
from bench.battles import pct, process_cpu

MODEL = "verbose"  # the demo's longest plain answer (86 tokens), cut to --tokens
PROMPT = "Tell me about routing"
PATHS = ("direct", "adapter", "router")
SATURATED = 0.9  # this process busy for this share of a core: TTFT is queueing for the loop
TARGETS = {  # issue 7, at 100 streams on the 2-core machine
    "added_p50_ms": 5.0,
    "added_p99_ms": 50.0,
    "rate_ratio": 0.90,
}
# As arena/app.py builds the one client every endpoint shares.
KEEPALIVE = 3.0


def machine_busy() -> float | None:
    """CPU seconds every process of the machine has used since boot (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=2000, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE
        ),
        follow_redirects=False,
    )


# ---------------------------------------------------------------------------
# Demo model servers, each a process of its own (so that one can be killed)


@dataclass
class Demo:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def demo_server(latency: float, tps: float) -> Iterator[Demo]:
    port = free_port()
    cmd = [sys.executable, "-m", "arena", "demo-models", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--latency", str(latency), "--tps", str(tps)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the demo server on {url} did not start") from None
                time.sleep(0.1)
        yield Demo(url, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()


def registry(urls: Sequence[str], cap: int) -> ArenaConfig:
    """Model `m` on these replicas; a second model (a battle needs two) on the first."""
    replicas = [{"base_url": f"{u}/v1", "model": MODEL} for u in urls]
    return parse_config(
        {
            "timeouts": {"connect": 5, "first_token": 60, "between_tokens": 30, "total": 300},
            # A cap high enough that no request waits for a slot: this measures the path.
            "routing": {"max_concurrent": cap},
            "models": [
                {"name": "m", "endpoints": replicas},
                {"name": "other", "endpoints": replicas[:1]},
            ],
        },
        source="bench.router",
    )


# ---------------------------------------------------------------------------
# One streamed answer, read three ways


@dataclass
class Stream:
    start: float
    first: float | None = None  # first text
    last: float | None = None  # last text
    end: float = 0.0
    tokens: int = 0  # text events or chunks seen
    usage_tokens: int | None = None  # completion tokens by the server's usage
    finished: bool = False
    error: str | None = None
    endpoints: list[str] = field(default_factory=list)
    in_flight: int = 0  # streams of this phase in flight when it started, itself included

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def had_text(self) -> bool:
        return self.first is not None

    @property
    def delivered(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.tokens


async def read_direct(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Stream:
    """The bare client: what the adapter sends, and each event's JSON read for its text."""
    s = Stream(start=time.perf_counter())
    timeout = httpx.Timeout(connect=5, read=None, write=5, pool=5)  # as the adapter's
    headers = {"Accept": "text/event-stream"}
    try:
        async with client.stream("POST", url, json=body, headers=headers, timeout=timeout) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                choices = event.get("choices")
                if choices:
                    choice = choices[0]
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if s.first is None:
                            s.first = now
                        s.last = now
                        s.tokens += 1
                    if choice.get("finish_reason"):
                        s.finished = True
                usage = event.get("usage")
                if usage:
                    s.usage_tokens = int(usage["completion_tokens"])
        if not s.finished:
            s.error = "NoFinishReason"
    except Exception as err:
        s.error = type(err).__name__
    s.end = time.perf_counter()
    return s


async def read_provider(
    provider: Provider, request: ChatRequest, s: Stream | None = None
) -> Stream:
    """Read one answer through `provider` into `s` (a new Stream if none: the kill run passes
    its own, to see it while it streams)."""
    s = s or Stream(start=time.perf_counter())
    try:
        async for chunk in provider.stream_chat(request):
            if chunk.endpoint:
                s.endpoints.append(chunk.endpoint)
            if chunk.content or chunk.reasoning:
                now = time.perf_counter()
                if s.first is None:
                    s.first = now
                s.last = now
                s.tokens += 1
            if chunk.finish_reason:
                s.finished = True
            if chunk.usage is not None:
                s.usage_tokens = chunk.usage.completion_tokens
    except Exception as err:
        s.error = type(err).__name__
    s.end = time.perf_counter()
    return s


Reader = Callable[[], Awaitable[Stream]]


def readers(
    router: Router, entry: ModelEntry, clients: dict[str, httpx.AsyncClient], tokens: int
) -> dict[str, Reader]:
    request = ChatRequest(
        messages=(ChatMessage(role="user", content=PROMPT),), params={"max_tokens": tokens}
    )
    endpoint = entry.endpoints[0]
    adapter = OpenAIProvider(
        clients["adapter"], endpoint, router.config.timeouts, think_tags=entry.think_tags
    )
    body = {  # what OpenAIProvider._body sends
        "model": endpoint.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
    }
    url = f"{endpoint.base_url}/chat/completions"
    return {
        "direct": lambda: read_direct(clients["direct"], url, body),
        "adapter": lambda: read_provider(adapter, request),
        "router": lambda: read_provider(router.provider(entry), request),
    }


# ---------------------------------------------------------------------------
# A phase: N streams in flight on one path


@dataclass
class Phase:
    path: str
    n: int
    round: int
    streams: list[Stream]  # the measured ones
    warm: int  # streams of the ramp and the tail, not measured
    seconds: float  # the measured window
    cpu_self: float | None  # share of a core this process used over the phase
    cpu_server: float | None
    cpu_seconds: float | None  # this process's CPU over the phase
    cpu_others: float | None  # share of a core every other process used (other work)
    tokens: int  # delivered by every stream of the phase, warm ones included


async def run_phase(
    path: str,
    read: Reader,
    n: int,
    round_: int,
    ramp: float,
    seconds: float,
    min_streams: int,
    server_pid: int,
) -> Phase:
    t0 = time.perf_counter()
    # Measured: the streams started once every worker has started and one answer's length
    # has passed (under load a worker can start late).
    measure_from = stop_at = float("inf")
    measured: list[Stream] = []
    warm = started = in_flight = tokens = 0
    cpu0, srv0, all0 = process_cpu(os.getpid()), process_cpu(server_pid), machine_busy()

    async def worker(i: int) -> None:
        nonlocal warm, started, in_flight, tokens, measure_from, stop_at
        await asyncio.sleep(i * ramp / n)
        started += 1
        if started == n:
            measure_from = max(t0 + ramp, time.perf_counter())
            stop_at = measure_from + seconds
        while True:
            now = time.perf_counter()
            if now >= stop_at and len(measured) >= min_streams:
                return
            in_flight += 1
            here = in_flight
            s = await read()
            in_flight -= 1
            s.in_flight = here
            tokens += s.delivered
            if s.start >= measure_from:
                measured.append(s)
            else:
                warm += 1

    await asyncio.gather(*(worker(i) for i in range(n)))
    wall = time.perf_counter() - t0
    cpu1, srv1, all1 = process_cpu(os.getpid()), process_cpu(server_pid), machine_busy()
    used = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    srv = None if srv0 is None or srv1 is None else (srv1 - srv0) / wall
    others = None
    if used is not None and srv is not None and all0 is not None and all1 is not None:
        others = max(0.0, (all1 - all0 - used) / wall - srv)
    window = max(s.start for s in measured) - measure_from if measured else 0.0
    share = None if used is None else used / wall
    return Phase(path, n, round_, measured, warm, window, share, srv, used, others, tokens)


# ---------------------------------------------------------------------------
# Figures


def ttfts(streams: Sequence[Stream]) -> list[float]:
    return [s.ttft for s in streams if s.ttft is not None and s.error is None]


def rate(streams: Sequence[Stream]) -> float:
    """Tokens per second per stream: the tokens of the streams over their summed durations."""
    ok = [s for s in streams if s.error is None and s.last is not None]
    seconds = sum(s.last - s.start for s in ok if s.last is not None)
    return sum(s.delivered for s in ok) / seconds if seconds > 0 else float("nan")


@dataclass
class PathFigures:
    streams: int
    errors: dict[str, int]
    ttft_p50_ms: float
    ttft_p99_ms: float
    rate_tps: float  # per stream
    cpu_self: float  # mean share of a core, this process
    cpu_server: float
    cpu_us_per_token: float  # this process's CPU over every token it read
    cpu_others: float  # mean share of a core used by other processes during the phases
    in_flight_min: int
    per_round_p50_ms: list[float]


def path_figures(phases: Sequence[Phase]) -> PathFigures:
    streams = [s for p in phases for s in p.streams]
    t = ttfts(streams)
    if not phases:
        nan = float("nan")
        return PathFigures(0, {}, nan, nan, nan, nan, nan, nan, nan, 0, [])
    cpu = [p.cpu_self for p in phases if p.cpu_self is not None]
    srv = [p.cpu_server for p in phases if p.cpu_server is not None]
    others = [p.cpu_others for p in phases if p.cpu_others is not None]
    return PathFigures(
        streams=len(streams),
        errors=dict(Counter(s.error for s in streams if s.error)),
        ttft_p50_ms=pct(t, 0.5) * 1000,
        ttft_p99_ms=pct(t, 0.99) * 1000,
        rate_tps=rate(streams),
        cpu_self=sum(cpu) / len(cpu) if cpu else float("nan"),
        cpu_server=sum(srv) / len(srv) if srv else float("nan"),
        cpu_us_per_token=sum(p.cpu_seconds or 0.0 for p in phases)
        / max(1, sum(p.tokens for p in phases))
        * 1e6,
        cpu_others=sum(others) / len(others) if others else float("nan"),
        in_flight_min=min((s.in_flight for s in streams), default=0),
        per_round_p50_ms=[pct(ttfts(p.streams), 0.5) * 1000 for p in phases],
    )


@dataclass
class LevelFigures:
    n: int
    paths: dict[str, PathFigures]
    added_p50_ms: float  # router - direct
    added_p99_ms: float
    pool_p50_ms: float  # router - adapter
    pool_p99_ms: float
    rate_ratio: float  # router / direct
    added_p50_per_round_ms: list[float]


def level_figures(n: int, phases: Sequence[Phase]) -> LevelFigures:
    """The figures of one concurrency; a path left out (`--paths`) has NaN figures."""
    by = {p: path_figures([ph for ph in phases if ph.path == p]) for p in PATHS}
    r, d, a = by["router"], by["direct"], by["adapter"]
    rounds = len(r.per_round_p50_ms) == len(d.per_round_p50_ms)
    return LevelFigures(
        n=n,
        paths=by,
        added_p50_ms=r.ttft_p50_ms - d.ttft_p50_ms,
        added_p99_ms=r.ttft_p99_ms - d.ttft_p99_ms,
        pool_p50_ms=r.ttft_p50_ms - a.ttft_p50_ms,
        pool_p99_ms=r.ttft_p99_ms - a.ttft_p99_ms,
        rate_ratio=r.rate_tps / d.rate_tps,
        added_p50_per_round_ms=[
            x - y for x, y in zip(r.per_round_p50_ms, d.per_round_p50_ms, strict=True)
        ]
        if rounds
        else [],
    )


# ---------------------------------------------------------------------------
# The kill run


@dataclass
class KillFigures:
    n: int
    latency: float
    streams: int
    completed: int
    retried: int  # answers whose stream named a second replica
    completed_on_survivor_after_retry: int
    in_flight_on_killed: int  # at the kill
    before_text_at_kill: int  # of those, streams that had no text yet
    failed_had_text: int  # allowed: never retried
    failed_no_text: int  # must be zero
    errors: dict[str, int]


async def kill_run(
    n: int, latency: float, tps: float, tokens: int, cap: int, out: TextIO
) -> KillFigures:
    with demo_server(latency, tps) as first, demo_server(latency, tps) as second:
        config = registry([first.url, second.url], cap)
        entry = config.model("m")
        victim = f"{first.url}/v1#{MODEL}"
        async with new_client() as client:
            router = Router(config, client, rng=random.Random(0))
            watcher = asyncio.create_task(router.watch_health())
            request = ChatRequest(
                messages=(ChatMessage(role="user", content=PROMPT),),
                params={"max_tokens": tokens},
            )
            provider = router.provider(entry)
            for _ in range(4):  # warm both replicas' connections
                await read_provider(provider, request)
            length = latency + tokens / tps if tps > 0 else latency + 0.05
            streams: list[Stream] = []
            live: dict[int, Stream] = {}
            stop_at = time.perf_counter() + 2 * length + 2.0
            kill_at = time.perf_counter() + length + 0.5  # all N in flight by then

            async def track(s_id: int) -> None:
                s = Stream(start=time.perf_counter())
                live[s_id] = s
                await read_provider(provider, request, s)
                del live[s_id]
                streams.append(s)

            ids = iter(range(10**9))

            async def worker(i: int) -> None:
                await asyncio.sleep(i * length / n)
                while time.perf_counter() < stop_at:
                    await track(next(ids))

            async def killer() -> tuple[int, int]:
                await asyncio.sleep(max(0.0, kill_at - time.perf_counter()))
                on_victim = [s for s in live.values() if s.endpoints[-1:] == [victim]]
                os.kill(first.pid, signal.SIGKILL)
                return len(on_victim), sum(1 for s in on_victim if not s.had_text)

            kill = asyncio.create_task(killer())
            await asyncio.gather(*(worker(i) for i in range(n)))
            on_victim, no_text_at_kill = await kill
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    failed = [s for s in streams if s.error]
    retried = [s for s in streams if len(s.endpoints) > 1]
    print(
        f"  kill at latency {latency:g} s: {on_victim} streams in flight on the killed replica"
        f" ({no_text_at_kill} of them before their first text)",
        file=out,
    )
    return KillFigures(
        n=n,
        latency=latency,
        streams=len(streams),
        completed=len(streams) - len(failed),
        retried=len(retried),
        completed_on_survivor_after_retry=sum(1 for s in retried if s.error is None),
        in_flight_on_killed=on_victim,
        before_text_at_kill=no_text_at_kill,
        failed_had_text=sum(1 for s in failed if s.had_text),
        failed_no_text=sum(1 for s in failed if not s.had_text),
        errors=dict(Counter(s.error for s in failed if s.error)),
    )


# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.router", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )

    def numbers(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
        return lambda text: [kind(x) for x in text.split(",") if x.strip()]

    p.add_argument("--streams", type=numbers(int), default=[1, 100, 500], metavar="N,N,…")
    p.add_argument("--tps", type=float, default=40.0, help="demo tokens per second per stream")
    p.add_argument("--tokens", type=int, default=64, help="tokens per answer (max_tokens)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the three paths in turn")
    p.add_argument("--seconds", type=float, default=5.0, help="measured window of a phase")
    p.add_argument("--min-streams", type=int, default=10, help="measured streams per phase")
    p.add_argument("--cap", type=int, default=1000, help="[routing] max_concurrent")
    p.add_argument("--kill-streams", type=int, default=100, help="streams of the kill run; 0: skip")
    p.add_argument(
        "--kill-latency",
        type=numbers(float),
        default=[0.0, 0.5],
        metavar="S,S",
        help="the demo's first-token latency in the kill runs (one run each): at 0 almost "
        "no request is caught before its first token",
    )
    p.add_argument(
        "--paths",
        type=lambda text: [x for x in PATHS if x in text.split(",")],
        default=list(PATHS),
        metavar="P,P",
        help="the paths to run (direct, adapter, router; default all): one alone for a profiler",
    )
    p.add_argument("--profile", type=Path, help="write a cProfile of each path's phases here")
    p.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    args = p.parse_args(argv)
    if not args.streams or min(args.streams) < 1 or args.rounds < 1 or args.tps < 0:
        p.error("--streams must be positive, --rounds at least 1, --tps not negative")
    if not args.paths:
        p.error(f"--paths names none of {', '.join(PATHS)}")
    return args


def fmt(x: float) -> str:
    return f"{x:+.1f}" if abs(x) < 100 else f"{x:+.0f}"


async def measure(args: argparse.Namespace, out: TextIO) -> dict[str, Any]:
    levels: list[LevelFigures] = []
    profiles = {p: cProfile.Profile() for p in PATHS} if args.profile else {}
    with demo_server(0.0, args.tps) as demo:
        config = registry([demo.url], args.cap)
        entry = config.model("m")
        clients = {p: new_client() for p in PATHS}
        async with contextlib.AsyncExitStack() as stack:
            for c in clients.values():
                await stack.enter_async_context(c)
            router = Router(config, clients["router"], rng=random.Random(0))
            read = readers(router, entry, clients, args.tokens)
            for path in args.paths:  # imports, the router's first build, a connection each
                for _ in range(3):
                    s = await read[path]()
                    if s.error:
                        raise RuntimeError(f"warm-up stream on {path} failed: {s.error}")
            length = args.tokens / args.tps if args.tps > 0 else 0.1
            for n in args.streams:
                phases: list[Phase] = []
                for k in range(args.rounds):
                    order = args.paths if k % 2 == 0 else args.paths[::-1]
                    for path in order:
                        prof = profiles.get(path)
                        if prof:
                            prof.enable()
                        ph = await run_phase(
                            path,
                            read[path],
                            n,
                            k,
                            length,
                            args.seconds,
                            args.min_streams,
                            demo.pid,
                        )
                        if prof:
                            prof.disable()
                        phases.append(ph)
                        t = ttfts(ph.streams)
                        errors = sum(1 for s in ph.streams if s.error)
                        busy = (ph.cpu_self or 0) >= SATURATED
                        print(
                            f"  N={n:<4} round {k + 1} {path:8} {len(ph.streams):5} streams "
                            f"TTFT p50 {pct(t, 0.5) * 1000:7.2f} ms p99 "
                            f"{pct(t, 0.99) * 1000:7.2f} ms  {rate(ph.streams):6.1f} tok/s  "
                            f"CPU {ph.cpu_self or 0:4.0%} (server {ph.cpu_server or 0:4.0%}, "
                            f"others {ph.cpu_others or 0:4.0%})"
                            + (f"  {errors} errors" if errors else "")
                            + ("  (saturated)" if busy else ""),
                            file=out,
                            flush=True,
                        )
                levels.append(level_figures(n, phases))
    kills = []
    for latency in args.kill_latency if args.kill_streams else []:
        kills.append(
            await kill_run(args.kill_streams, latency, args.tps, args.tokens, args.cap, out)
        )
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        for path, prof in profiles.items():
            prof.dump_stats(args.profile / f"{path}.pstats")
        text = io.StringIO()
        for path in args.paths:
            text = io.StringIO()
            stats = pstats.Stats(profiles[path], stream=text)
            stats.sort_stats("tottime").print_stats(15)
            print(f"\ncProfile of the {path} phases (all in {args.profile}):", file=out)
            print(text.getvalue(), file=out)
    return {"levels": levels, "kills": kills}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    # The kill runs make the pool log each failure and retry; the figures count them.
    logging.getLogger("arena").setLevel(logging.ERROR)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "load_average": os.getloadavg()[0],
    }
    print("Router overhead: answers streamed from the demo server (its own TTFT 0) read", file=out)
    print("directly (bare httpx), by the bare OpenAIProvider, and through the Router.", file=out)
    print(
        f"  streams {args.streams}, {args.tps:g} tokens/s, {args.tokens} tokens per answer, "
        f"{args.rounds} rounds, {args.seconds:g} s measured per phase; [routing] "
        f"max_concurrent {args.cap}",
        file=out,
    )
    print(
        f"  {machine['cpus']} CPUs, Python {machine['python']}, httpx {machine['httpx']}, "
        f"load average {machine['load_average']:.2f} at the start",
        file=out,
        flush=True,
    )
    found = asyncio.run(measure(args, out))
    machine["load_average_end"] = os.getloadavg()[0]
    print(f"  load average {machine['load_average_end']:.2f} at the end", file=out)
    levels: list[LevelFigures] = found["levels"]
    kills: list[KillFigures] = found["kills"]

    print("\n== time to first token (ms), all rounds ==", file=out)
    print(
        f"{'N':>5} | {'direct p50/p99':>15} | {'adapter p50/p99':>15} | {'router p50/p99':>15} |"
        f" {'added p50/p99':>13} | {'pool p50/p99':>12} | added p50 per round",
        file=out,
    )
    for lv in levels:
        d, a, r = (lv.paths[p] for p in PATHS)
        print(
            f"{lv.n:>5} | {d.ttft_p50_ms:6.2f} / {d.ttft_p99_ms:6.2f} | "
            f"{a.ttft_p50_ms:6.2f} / {a.ttft_p99_ms:6.2f} | "
            f"{r.ttft_p50_ms:6.2f} / {r.ttft_p99_ms:6.2f} | "
            f"{fmt(lv.added_p50_ms):>5} / {fmt(lv.added_p99_ms):>5} | "
            f"{fmt(lv.pool_p50_ms):>4} / {fmt(lv.pool_p99_ms):>5} | "
            + ", ".join(fmt(x) for x in lv.added_p50_per_round_ms),
            file=out,
        )
    print("\n== delivered tokens/s per stream, CPU (share of a core) ==", file=out)
    for lv in levels:
        d, a, r = (lv.paths[p] for p in PATHS)
        print(
            f"{lv.n:>5} | direct {d.rate_tps:6.2f} | adapter {a.rate_tps:6.2f} | "
            f"router {r.rate_tps:6.2f} ({lv.rate_ratio:.1%} of direct) | CPU direct "
            f"{d.cpu_self:.0%}, adapter {a.cpu_self:.0%}, router {r.cpu_self:.0%} "
            f"({d.cpu_us_per_token:.0f}/{a.cpu_us_per_token:.0f}/{r.cpu_us_per_token:.0f} µs "
            "a token); "
            f"server {d.cpu_server:.0%}/{a.cpu_server:.0%}/{r.cpu_server:.0%}; "
            f"other processes {d.cpu_others:.0%}/{a.cpu_others:.0%}/{r.cpu_others:.0%} | "
            f"streams {d.streams}/{a.streams}/{r.streams}, in flight at start ≥ "
            f"{min(p.in_flight_min for p in lv.paths.values())}",
            file=out,
        )
    if any(p.cpu_self >= SATURATED for lv in levels for p in lv.paths.values()):
        print(
            f"\n(CPU at or above {SATURATED:.0%} of a core: this process is saturated; "
            "its time to first token is then mostly waiting for the event loop.)",
            file=out,
        )
    print("\n== errors ==", file=out)
    measured_errors = 0
    for lv in levels:
        for p in PATHS:
            errs = lv.paths[p].errors
            measured_errors += sum(errs.values())
            if errs:
                print(f"  N={lv.n} {p}: {errs}", file=out)
    if not measured_errors:
        print("  none", file=out)
    bad_kill = 0
    if kills:
        print("\n== one of two replicas killed (SIGKILL), health watcher running ==", file=out)
    for k in kills:
        bad_kill += k.failed_no_text
        print(
            f"  latency {k.latency:g} s, {k.n} streams: {k.streams} answers, {k.completed} "
            f"completed; {k.retried} retried on the other replica "
            f"({k.completed_on_survivor_after_retry} of them completed); failed: "
            f"{k.failed_had_text} had streamed text (allowed), {k.failed_no_text} had not "
            f"(must be 0); {k.errors or 'no errors'}",
            file=out,
        )
    for lv in levels:
        if lv.n == 100:
            met = {
                "added p50 ≤ 5 ms": lv.added_p50_ms <= TARGETS["added_p50_ms"],
                "added p99 ≤ 50 ms": lv.added_p99_ms <= TARGETS["added_p99_ms"],
                "rate ≥ 90% of direct": lv.rate_ratio >= TARGETS["rate_ratio"],
            }
            print(
                "\ntargets at 100 streams: "
                + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()),
                file=out,
            )
    if args.json:
        doc = {
            "machine": machine,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "levels": [asdict(lv) for lv in levels],
            "kills": [asdict(k) for k in kills],
        }
        json.dump(doc, sys.stdout, indent=2, default=str)
        print()
    ok = measured_errors == 0 and bad_kill == 0
    print("\nok" if ok else "\nFAILED: answers that must not fail failed", file=out)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as err:  # a demo server did not start, or a warm-up stream failed
        print(f"bench.router: {err}", file=sys.stderr)
        sys.exit(2)
