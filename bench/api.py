"""Benchmark: the leaderboard export API under load, and a million imported votes rated.

    python -m bench.api [--quick] [--rows N] [--duration S] [--no-api] [--profile]

1. Writes a clean-battle JSON array (FastChat's format) of `--rows` battles (1,000,000; 100,000
   with --quick) among 200 models to a temporary directory: each row has model_a, model_b,
   winner, judge, turn, anony, language, tstamp, question_id, FastChat's `conv_metadata` style
   counts (token sums and the header/list/bold dicts), its `dedup_tag` and `category_tag`, and
   Arena's own `categories` tags so that every fixed category has votes. Outcomes follow
   Bradley–Terry ratings plus a true length effect; ties, both-bad votes, multi-turn battles,
   a few non-anonymous rows and a dozen languages are in it.
2. `arena import FILE` into a fresh, migrated SQLite file, as a subprocess: wall time and peak
   memory (the child's own rusage from wait4, i.e. its VmHWM).
3. `arena ratings compute` on that database, the same way: every category, with and without style
   control (what the command does).
4. The arena app as `arena serve` runs it (`create_app(..., with_ui=True)`: FastAPI, the export API
   and the Gradio UI in one process, uvicorn with h11 and asyncio) on that database, in a process
   of its own, and `wrk` (or, without wrk, a small asyncio HTTP/1.1 client) in another, driving
   `GET /api/v1/leaderboard` (200 rows): one connection back to back, a moderate load (16
   connections, each pausing between requests) for the latency targets, and 64 connections
   without pause for the sustained rate. The scheduler places the two processes (wrk needs a
   few percent of a core; --pin puts them on CPUs 0 and 1). Each run also reports how much of
   the time the server's threads were runnable but waiting for a CPU that another process held
   (/proc schedstat): on a shared machine that is where the tail comes from. Then the
   other read endpoints, one connection each, for reference.

Prints each figure beside its target and exits non-zero if a step failed (not if a target is
missed: targets are reported, never asserted). Wall-clock figures depend on what else runs on
the machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import pstats
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from arena import db
from arena.config import registry_toml

ROOT = Path(__file__).resolve().parent.parent
MODELS = 200
FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
GIB = 1024**3
LEADERBOARD = "/api/v1/leaderboard"

TARGETS = {
    "p50": 0.010,  # seconds, moderate load
    "p99": 0.050,
    "rate": 500.0,  # requests per second at saturation
    "import_s": 60.0,
    "import_rss": GIB,
    "ratings_s": 20.0,
}

# Languages as public clean-battle files name them, with their rough share of votes.
LANGUAGES = {
    "English": 0.55,
    "Chinese": 0.11,
    "Russian": 0.08,
    "German": 0.04,
    "Japanese": 0.03,
    "French": 0.03,
    "Spanish": 0.03,
    "Korean": 0.02,
    "Portuguese": 0.02,
    "Italian": 0.015,
    "Polish": 0.01,
    "Vietnamese": 0.01,
    "Arabic": 0.01,
    "unknown": 0.045,
}
# Arena's own category tags and their share (multi_turn comes from `turn`).
CATEGORY_SHARE = {"coding": 0.25, "math": 0.07, "hard": 0.35, "long": 0.08}
WINNER_TEXT = ("model_a", "model_b", "tie", "tie (bothbad)")


# ---------------------------------------------------------------------------
# The battle file


@dataclass(frozen=True)
class World:
    """200 models: true strengths, answer style and how often each is drawn."""

    names: list[str]
    elo: np.ndarray[Any, Any]
    log_len: np.ndarray[Any, Any]  # mean log tokens per answer
    headers: np.ndarray[Any, Any]  # mean header count
    lists: np.ndarray[Any, Any]
    bold: np.ndarray[Any, Any]
    weight: np.ndarray[Any, Any]

    @classmethod
    def make(cls, n: int, seed: int) -> World:
        rng = np.random.default_rng(seed)
        weight = rng.lognormal(0.0, 0.8, n)
        return cls(
            names=[f"model-{i:03d}" for i in range(n)],
            elo=rng.normal(0.0, 120.0, n),
            log_len=rng.normal(6.0, 0.45, n),
            headers=rng.gamma(1.5, 1.0, n),
            lists=rng.gamma(2.0, 2.0, n),
            bold=rng.gamma(1.5, 2.0, n),
            weight=weight / weight.sum(),
        )


def _block(world: World, rng: np.random.Generator, start: int, n: int) -> list[str]:
    """`n` rows of the file as JSON text, vectorised draws then one format per row."""
    m = len(world.names)
    a = rng.choice(m, size=n, p=world.weight)
    b = rng.choice(m, size=n, p=world.weight)
    while (same := np.flatnonzero(a == b)).size:  # both sides drawn by weight, distinct
        b[same] = rng.choice(m, size=same.size, p=world.weight)
    turn = rng.choice([1, 2, 3], size=n, p=[0.85, 0.10, 0.05])
    user = rng.integers(5, 400, size=n) * turn
    tok = [
        np.maximum(1, rng.lognormal(world.log_len[x], 0.6) * turn).astype(np.int64) for x in (a, b)
    ]
    hdr = [rng.poisson(world.headers[x]) for x in (a, b)]
    lst = [rng.poisson(world.lists[x]) for x in (a, b)]
    bld = [rng.poisson(world.bold[x]) for x in (a, b)]
    # Bradley–Terry on the true ratings plus a length effect (longer answers win more often).
    logit = (world.elo[a] - world.elo[b]) * np.log(10) / 400 + 0.25 * np.log(tok[0] / tok[1])
    u = rng.random(n)
    win_a = rng.random(n) < 1 / (1 + np.exp(-logit))
    outcome = np.where(u < 0.18, 2, np.where(u < 0.25, 3, np.where(win_a, 0, 1)))
    names = list(LANGUAGES)
    share = np.array(list(LANGUAGES.values()))
    lang = rng.choice(len(names), size=n, p=share / share.sum())
    tags = {k: rng.random(n) < p for k, p in CATEGORY_SHARE.items()}
    anony = rng.random(n) >= 0.02
    qid = rng.bytes(16 * n).hex()
    judge = rng.integers(0, 2**40, size=n).tolist()
    crit = (rng.random((n, 7)) < 0.5).tolist()
    # Per side: header counts split over h2/h3, list items over ordered/unordered.
    sides = []
    for s, x in enumerate("ab"):
        h = hdr[s]
        h2 = np.where(rng.random(n) < 0.5, h, h // 2)
        lo = lst[s]
        sides.append(
            [
                f'"header_count_{x}": {{"h1": 0, "h2": {p}, "h3": {q}, "h4": 0, "h5": 0, '
                f'"h6": 0}}, "list_count_{x}": {{"ordered": {o}, "unordered": {u}}}, '
                f'"bold_count_{x}": {{"**": {bo}, "__": 0}}'
                for p, q, o, u, bo in zip(
                    h2.tolist(),
                    (h - h2).tolist(),
                    (lo // 3).tolist(),
                    (lo - lo // 3).tolist(),
                    bld[s].tolist(),
                    strict=True,
                )
            ]
        )
    cats = [
        "[" + ", ".join(f'"{t}"' for t, mask in tags.items() if mask[i]) + "]" for i in range(n)
    ]
    tf = ("false", "true")
    rows = []
    for i, (ma, mb, win, tu, an, la, ut, ta, tb, c, ma_, jd) in enumerate(
        zip(
            a.tolist(),
            b.tolist(),
            outcome.tolist(),
            turn.tolist(),
            anony.tolist(),
            lang.tolist(),
            user.tolist(),
            tok[0].tolist(),
            tok[1].tolist(),
            crit,
            tags["math"].tolist(),
            judge,
            strict=True,
        )
    ):
        rows.append(
            f'{{"model_a": "{world.names[ma]}", "model_b": "{world.names[mb]}", '
            f'"winner": "{WINNER_TEXT[win]}", "judge": "arena_user_{jd:010x}", '
            f'"turn": {tu}, "anony": {tf[an]}, "language": "{names[la]}", '
            f'"tstamp": {1_700_000_000 + (start + i) * 0.731:.3f}, '
            f'"conv_metadata": {{"sum_user_tokens": {ut}, '
            f'"sum_assistant_a_tokens": {ta}, "sum_assistant_b_tokens": {tb}, '
            f'"context_a_tokens": {ut}, "context_b_tokens": {ut}, "turns": {tu}, '
            f"{sides[0][i]}, {sides[1][i]}}}, "
            f'"dedup_tag": {{"high_freq": false, "sampled": true}}, '
            f'"category_tag": {{"criteria_v0.1": {{"specificity": {tf[c[0]]}, '
            f'"domain_knowledge": {tf[c[1]]}, "complexity": {tf[c[2]]}, '
            f'"problem_solving": {tf[c[3]]}, "creativity": {tf[c[4]]}, '
            f'"technical_accuracy": {tf[c[5]]}, "real_world": {tf[c[6]]}}}, '
            f'"math_v0.1": {{"math": {tf[ma_]}}}}}, '
            f'"categories": {cats[i]}, "question_id": "{qid[32 * i : 32 * i + 32]}"}}'
        )
    return rows


def write_battle_file(path: Path, rows: int, world: World, seed: int) -> int:
    """Write `rows` battles as one JSON array; return the file's size in bytes."""
    rng = np.random.default_rng(seed)
    block = 50_000
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        first = True
        for start in range(0, rows, block):
            lines = _block(world, rng, start, min(block, rows - start))
            if not first:
                fh.write(",\n")
            fh.write(",\n".join(lines))
            first = False
        fh.write("\n]\n")
    return path.stat().st_size


# ---------------------------------------------------------------------------
# The registry: 200 models behind an endpoint that is never called


def registry(world: World) -> dict[str, Any]:
    return {
        "arena": {"title": "Bench Arena"},
        "ratings": {"interval_minutes": 0},
        "models": [
            {
                "name": name,
                "organization": f"Lab {i % 17}",
                "license": "Apache-2.0" if i % 3 else "proprietary",
                "description": f"Synthetic benchmark model {i}.",
                "endpoints": [{"base_url": "http://127.0.0.1:9/v1", "model": name}],
            }
            for i, name in enumerate(world.names)
        ],
    }


# ---------------------------------------------------------------------------
# `arena` commands as subprocesses, with their own rusage


@dataclass
class CliRun:
    argv: list[str]
    wall: float
    cpu: float  # user + system seconds
    max_rss: int  # bytes: the child's peak resident set (VmHWM)
    returncode: int
    stdout: str
    stderr: str
    runqueue: float = float("nan")  # seconds runnable but waiting for a CPU (all its threads)

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def run_cli(
    args: Sequence[str], env: dict[str, str], workdir: Path, prefix: Sequence[str] = ()
) -> CliRun:
    """`python [prefix] -m arena ARGS`, timed, with the child's own peak memory (wait4)."""
    argv = [sys.executable, *prefix, "-m", "arena", *args]
    out_path, err_path = workdir / "cli.out", workdir / "cli.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=workdir)
        waits: dict[str, float] = {}
        stop = threading.Event()
        poller = threading.Thread(target=_poll_runqueue, args=(proc.pid, waits, stop))
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return CliRun(
        argv=argv,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        runqueue=sum(waits.values()) if waits else float("nan"),
    )


def _poll_runqueue(pid: int, waits: dict[str, float], stop: threading.Event) -> None:
    """Keep each thread's time spent runnable but waiting for a CPU (/proc/PID/task/TID/schedstat,
    second field): on a shared machine, the part of the wall time that other processes took."""
    while not stop.wait(0.2):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    waits[task.name] = int((task / "schedstat").read_text().split()[1]) / 1e9


def check_run(name: str, run: CliRun) -> None:
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{name} failed (exit {run.returncode}):\n{tail}")


# ---------------------------------------------------------------------------
# The server, in a process of its own


def _serve(params: dict[str, Any], ports: Any) -> None:
    """Child process: build the app as `arena serve` does, bind port 0, serve until SIGTERM."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if params["cpu"] is not None:
        os.sched_setaffinity(0, {params["cpu"]})
    import uvicorn

    from arena.app import create_app
    from arena.config import Settings, parse_config

    config = parse_config(params["registry"], source="bench registry")
    settings = Settings(database_url=params["database_url"], config_path=Path(params["config"]))
    app = create_app(settings, config=config, with_ui=params["with_ui"]).asgi
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket's proto says TCP, and socket.socket() says 0. Without it a response
    # written in two sends waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    ports.put(sock.getsockname()[1])
    # As `arena serve` runs it (h11 and asyncio: uvloop and httptools are not installed).
    uv_config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, backlog=2048)
    uvicorn.Server(uv_config).run(sockets=[sock])


@dataclass
class Server:
    process: BaseProcess
    url: str

    def cpu_seconds(self) -> float:
        assert self.process.pid is not None
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def runqueue_seconds(self) -> float:
        """Time its threads spent runnable but waiting for a CPU (schedstat, second field)."""
        total = 0.0
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    total += int((task / "schedstat").read_text().split()[1]) / 1e9
        return total


@contextlib.contextmanager
def serve(params: dict[str, Any]) -> Iterator[Server]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    process = ctx.Process(target=_serve, args=(params, ports), name="arena", daemon=True)
    process.start()
    try:
        try:
            port = ports.get(timeout=180)
        except Exception:
            raise RuntimeError("the arena app did not start") from None
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or not process.is_alive():
                    raise RuntimeError(f"the arena app did not answer on {url}/healthz") from None
                time.sleep(0.1)
        yield Server(process, url)
    finally:
        process.terminate()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


# ---------------------------------------------------------------------------
# Load: wrk, or an asyncio HTTP/1.1 client in another process


@dataclass
class Load:
    label: str
    connections: int
    think_ms: float
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0  # socket errors, timeouts and statuses other than 200
    p50: float = float("nan")  # seconds
    p90: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    server_cpu: float = float("nan")  # share of one core
    server_wait: float = float("nan")  # share of the run its threads waited for a CPU
    client_cpu: float = float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_SCRIPT = """
function delay()
  return {think_ms}
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration=%d p50=%d p90=%d p99=%d max=%d errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _affinity(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_wrk(url: str, load: Load, duration: float, cpu: int | None, workdir: Path) -> Load:
    script = workdir / f"wrk-{int(load.think_ms)}.lua"
    script.write_text(WRK_SCRIPT.replace("{think_ms}", str(int(load.think_ms))))
    argv = [
        "wrk",
        "-t1",
        f"-c{load.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_affinity(cpu)
    )
    assert proc.stdout is not None
    text = proc.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    match = re.search(r"^BENCH (.*)$", text, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{text}")
    got = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    load.requests = got["requests"]
    load.seconds = got["duration"] / 1e6
    load.errors = got["errors"]
    load.p50, load.p90, load.p99 = got["p50"] / 1e6, got["p90"] / 1e6, got["p99"] / 1e6
    load.max = got["max"] / 1e6
    load.client_cpu = (usage.ru_utime + usage.ru_stime) / load.seconds
    return load


async def _client(
    host: str, port: int, path: str, conns: int, duration: float, think: float
) -> tuple[list[float], int, float]:
    """Closed-loop HTTP/1.1 keep-alive connections, each sending one request at a time."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    t_end = time.perf_counter() + duration

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                if think:
                    await asyncio.sleep(think)
        finally:
            writer.close()

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(conns)), return_exceptions=True)
    errors += sum(1 for r in results if isinstance(r, BaseException))
    return latencies, errors, time.perf_counter() - t0


def _client_process(args: tuple[Any, ...], out: Any) -> None:
    cpu = args[-1]
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    lat, errors, seconds = asyncio.run(_client(*args[:-1]))
    out.put((lat, errors, seconds, time.process_time()))


def run_python_client(url: str, load: Load, duration: float, cpu: int | None) -> Load:
    host, port = url.removeprefix("http://").split(":")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    args = (host, int(port), LEADERBOARD, load.connections, duration, load.think_ms / 1000, cpu)
    proc = ctx.Process(target=_client_process, args=(args, out), daemon=True)
    proc.start()
    lat, errors, seconds, cpu_used = out.get(timeout=duration + 120)
    proc.join(timeout=10)
    arr = np.array(lat) if lat else np.array([np.nan])
    load.requests, load.errors, load.seconds = len(lat), errors, seconds
    load.p50, load.p90, load.p99 = (float(np.percentile(arr, q)) for q in (50, 90, 99))
    load.max = float(arr.max())
    load.client_cpu = cpu_used / seconds
    return load


def drive(server: Server, load: Load, duration: float, cpu: int | None, workdir: Path) -> Load:
    cpu0, wait0, t0 = server.cpu_seconds(), server.runqueue_seconds(), time.perf_counter()
    url = server.url + LEADERBOARD
    if shutil.which("wrk"):
        run_wrk(url, load, duration, cpu, workdir)
    else:
        run_python_client(server.url, load, duration, cpu)
    elapsed = time.perf_counter() - t0
    load.server_cpu = (server.cpu_seconds() - cpu0) / elapsed
    load.server_wait = (server.runqueue_seconds() - wait0) / elapsed
    return load


# ---------------------------------------------------------------------------
# Reporting


def times(run: CliRun) -> str:
    return (
        f"{run.wall:.1f} s wall, {run.cpu:.1f} s CPU, {run.runqueue:.1f} s runnable but waiting "
        f"for a CPU, peak memory {mib(run.max_rss)}"
    )


def loadavg() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x == x else "—"


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


@dataclass
class Results:
    rows: int = 0
    file_bytes: int = 0
    models_on_board: int = 0
    import_run: CliRun | None = None
    ratings_run: CliRun | None = None
    ratings_blas1: CliRun | None = None
    loads: list[Load] = field(default_factory=list)
    moderate: Load | None = None
    saturation: Load | None = None
    extra: list[tuple[str, int, float, float, float]] = field(default_factory=list)


def print_summary(r: Results) -> None:
    print("\n== targets ==")
    print("| measure | measured | target | |\n| --- | ---: | ---: | --- |")
    if r.moderate is not None:
        m = r.moderate
        print(
            f"| `GET {LEADERBOARD}` p50 ({m.connections} connections, {m.rate:.0f} req/s) "
            f"| {ms(m.p50)} | ≤ 10 ms | {verdict(m.p50 <= TARGETS['p50'])} |"
        )
        print(
            f"| `GET {LEADERBOARD}` p99 | {ms(m.p99)} | ≤ 50 ms "
            f"| {verdict(m.p99 <= TARGETS['p99'])} |"
        )
    if r.saturation is not None:
        s = r.saturation
        ok = s.rate >= TARGETS["rate"] and s.errors == 0
        print(
            f"| sustained rate ({s.connections} connections, {s.errors} errors) "
            f"| {s.rate:,.0f} req/s | ≥ 500 req/s | {verdict(ok)} |"
        )
    if r.import_run is not None:
        i = r.import_run
        ok = i.wall <= TARGETS["import_s"] and i.max_rss < TARGETS["import_rss"]
        print(
            f"| `arena import` of {r.rows:,} rows: time, peak memory "
            f"| {i.wall:.1f} s, {mib(i.max_rss)} | ≤ 60 s, < 1 GiB | {verdict(ok)} |"
        )
    if r.ratings_run is not None:
        c = r.ratings_run
        print(
            f"| `arena ratings compute` after it: time (peak memory) "
            f"| {c.wall:.1f} s ({mib(c.max_rss)}) | ≤ 20 s "
            f"| {verdict(c.wall <= TARGETS['ratings_s'])} |"
        )
    if r.ratings_blas1 is not None:
        c = r.ratings_blas1
        print(
            f"| the same with OPENBLAS_NUM_THREADS=1 (not as shipped) "
            f"| {c.wall:.1f} s ({mib(c.max_rss)}) | ≤ 20 s "
            f"| {verdict(c.wall <= TARGETS['ratings_s'])} |"
        )


def print_profile(path: Path, label: str, top: int) -> None:
    print(f"\n-- profile: {label} (cProfile, cumulative, project code and the heaviest callees) --")
    stats = pstats.Stats(str(path))
    total = max(v[3] for v in stats.stats.values())  # type: ignore[attr-defined]
    entries = []
    for (filename, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append((cumtime, tottime, calls, filename, line, func))
    shown = 0
    for cumtime, tottime, calls, filename, line, func in sorted(entries, reverse=True):
        inside = str(ROOT) in filename and ".venv" not in filename
        if not inside and tottime < 0.03 * total:
            continue
        where = filename.replace(str(ROOT) + "/", "")
        where = re.sub(r".*site-packages/", "", where)
        print(
            f"  {cumtime:7.2f} s cum {tottime:6.2f} s own {calls:>9} calls  {where}:{line}({func})"
        )
        shown += 1
        if shown >= top:
            break


# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.api", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    p.add_argument("--quick", action="store_true", help="100,000 rows and 5 s load runs")
    p.add_argument("--rows", type=int, help="battles to import (default 1,000,000)")
    p.add_argument("--duration", type=float, help="seconds per load run (default 15; quick 5)")
    p.add_argument(
        "--moderate",
        type=int,
        nargs=2,
        default=[16, 50],
        metavar=("CONNECTIONS", "THINK_MS"),
        help="the latency run: connections and each one's pause between requests (16 50)",
    )
    p.add_argument(
        "--saturate", type=int, default=64, metavar="CONNECTIONS", help="the rate run (64)"
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to CPU 0 and the load generator to CPU 1 (default: the scheduler "
        "places them; on a shared machine pinning keeps the server on a busy core)",
    )
    p.add_argument("--no-ui", action="store_true", help="serve without the Gradio UI mounted")
    p.add_argument("--no-api", action="store_true", help="import and ratings only")
    p.add_argument("--no-extra", action="store_true", help="skip the other endpoints")
    p.add_argument(
        "--blas1",
        action="store_true",
        help="afterwards, rerun `arena ratings compute --force` with OPENBLAS_NUM_THREADS=1 "
        "for comparison",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, import and rate again under cProfile (into a second database) "
        "and print where the time goes",
    )
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir)")
    p.add_argument("--seed", type=int, default=20261130)
    args = p.parse_args(argv)
    args.rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    if args.rows < 1000 or args.duration <= 0:
        p.error("--rows must be at least 1000 and --duration positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    versions = ", ".join(
        f"{pkg} {importlib.metadata.version(pkg)}"
        for pkg in ("fastapi", "gradio", "uvicorn", "SQLAlchemy", "numpy")
    )
    cores = os.cpu_count() or 1
    pin = cores >= 2 and args.pin
    server_cpu, client_cpu = (0, 1) if pin else (None, None)
    wrk = shutil.which("wrk")
    print("Arena export API and import benchmark")
    print(
        f"  {platform.python_implementation()} {platform.python_version()}, {versions}; "
        f"{cores} CPUs; {loadavg()}"
    )
    print(
        f"  load generator: {'wrk (' + wrk + ')' if wrk else 'asyncio HTTP/1.1 client'}; "
        + (
            f"server pinned to CPU {server_cpu}, load generator to CPU {client_cpu}"
            if pin
            else "server and load generator unpinned"
        )
    )
    sys.stdout.flush()
    res = Results(rows=args.rows)
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(args.keep)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="arena-bench-api-")))
        world = World.make(MODELS, args.seed)
        reg = registry(world)
        config_path = work / "arena.toml"
        config_path.write_text(registry_toml(reg))
        battles = work / "battles.json"

        t0 = time.perf_counter()
        res.file_bytes = write_battle_file(battles, args.rows, world, args.seed)
        print(
            f"\nwrote {args.rows:,} clean-battle rows, {len(world.names)} models, "
            f"{res.file_bytes / 2**20:,.0f} MiB, in {time.perf_counter() - t0:.1f} s"
        )

        def fresh_db(name: str) -> tuple[str, dict[str, str]]:
            path = work / name
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            url = f"sqlite:///{path}"
            db.upgrade(url)
            env = {
                **os.environ,
                "ARENA_DATABASE_URL": url,
                "ARENA_CONFIG": str(config_path),
                "PYTHONPATH": str(ROOT),
            }
            return url, env

        database_url, env = fresh_db("arena.db")
        print(
            f"\n$ arena import {battles.name}   (fresh SQLite, migrated; {loadavg()})", flush=True
        )
        imp = run_cli(["import", str(battles)], env, work)
        check_run("arena import", imp)
        res.import_run = imp
        size = sum(p.stat().st_size for p in work.glob("arena.db*"))
        print(f"  {imp.last_line}")
        print(
            f"  {times(imp)}; {args.rows / imp.wall:,.0f} rows/s; "
            f"database now {size / 2**20:,.0f} MiB"
        )

        print(f"\n$ arena ratings compute   ({loadavg()})", flush=True)
        rat = run_cli(["ratings", "compute"], env, work)
        check_run("arena ratings compute", rat)
        res.ratings_run = rat
        print(f"  {rat.last_line}")
        print(f"  {times(rat)}")

        if not args.no_api:
            run_api(args, res, reg, database_url, config_path, work, server_cpu, client_cpu)

        if args.blas1:
            one = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            print(f"\n$ OPENBLAS_NUM_THREADS=1 arena ratings compute --force   ({loadavg()})")
            again = run_cli(["ratings", "compute", "--force"], {**env, **one}, work)
            check_run("arena ratings compute --force", again)
            res.ratings_blas1 = again
            print(f"  {again.last_line}")
            print(f"  {times(again)}")

        if args.profile:
            profile(args, work, fresh_db, battles)
    print_summary(res)
    return 0


def run_api(
    args: argparse.Namespace,
    res: Results,
    reg: dict[str, Any],
    database_url: str,
    config_path: Path,
    work: Path,
    server_cpu: int | None,
    client_cpu: int | None,
) -> None:
    params = {
        "registry": reg,
        "database_url": database_url,
        "config": str(config_path),
        "with_ui": not args.no_ui,
        "cpu": server_cpu,
    }
    t0 = time.perf_counter()
    with serve(params) as server:
        started = time.perf_counter() - t0
        with httpx.Client(base_url=server.url, timeout=30) as client:
            first = client.get(LEADERBOARD)
            first.raise_for_status()
            doc = first.json()
            res.models_on_board = len(doc["rows"])
            home = client.get("/")
            ui = "Gradio UI answers at /" if home.status_code == 200 else f"/ -> {home.status_code}"
        print(
            f"\narena app up in {started:.1f} s ({'with' if not args.no_ui else 'without'} the "
            f"Gradio UI; {ui}); {LEADERBOARD}: snapshot {doc['snapshot']['id']}, "
            f"{res.models_on_board} rows, {len(first.content):,} bytes, "
            f"first request {first.elapsed.total_seconds() * 1000:.0f} ms"
        )
        if res.models_on_board != MODELS:
            print(f"  warning: expected {MODELS} rows on the board")
        cpu0 = server.cpu_seconds()
        time.sleep(2)
        print(f"  idle, the app uses {(server.cpu_seconds() - cpu0) / 2 * 100:.0f}% of a core")
        drive(server, Load("warm-up", 4, 0), 2, client_cpu, work)

        conns, think = args.moderate
        plan = [
            Load("one connection, back to back", 1, 0),
            Load(f"moderate: {conns} connections, {think} ms pause each", conns, think),
            Load(f"saturation: {args.saturate} connections, no pause", args.saturate, 0),
        ]
        print(
            f"\nGET {LEADERBOARD}, {args.duration:g} s per run ({loadavg()})\n"
            "| load | req/s | p50 | p90 | p99 | max | errors | server CPU | server waiting "
            "for a CPU | client CPU |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        for load in plan:
            drive(server, load, args.duration, client_cpu, work)
            res.loads.append(load)
            print(
                f"| {load.label} | {load.rate:,.0f} | {ms(load.p50)} | {ms(load.p90)} "
                f"| {ms(load.p99)} | {ms(load.max)} | {load.errors} "
                f"| {load.server_cpu * 100:.0f}% | {load.server_wait * 100:.0f}% "
                f"| {load.client_cpu * 100:.0f}% |",
                flush=True,
            )
        res.moderate, res.saturation = plan[1], plan[2]

        if not args.no_extra:
            extra(server, doc["snapshot"]["id"], min(args.duration, 3.0), res)


def extra(server: Server, snapshot_id: int, seconds: float, res: Results) -> None:
    """The other read endpoints, one connection back to back, for reference."""
    paths = [
        f"{LEADERBOARD}?category=coding&style_control=true",
        f"{LEADERBOARD}?format=csv",
        "/api/v1/leaderboard/snapshots",
        f"/api/v1/leaderboard/snapshots/{snapshot_id}",
        "/api/v1/models",
        "/api/v1/battles?limit=1000",
        "/healthz",
    ]
    print(
        f"\nother endpoints, one connection back to back, {seconds:g} s each\n"
        "| request | bytes | req/s | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: |"
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for path in paths:
            times: list[float] = []
            size = 0
            status = 200
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end or len(times) < 3:
                t0 = time.perf_counter()
                r = client.get(path)
                times.append(time.perf_counter() - t0)
                size, status = len(r.content), r.status_code
            arr = np.array(times)
            p50, p99 = float(np.percentile(arr, 50)), float(np.percentile(arr, 99))
            rate = len(times) / float(arr.sum())
            note = "" if status == 200 else f" (status {status})"
            print(f"| `{path}`{note} | {size:,} | {rate:,.0f} | {ms(p50)} | {ms(p99)} |")
            res.extra.append((path, size, rate, p50, p99))


def profile(args: argparse.Namespace, work: Path, fresh_db: Any, battles: Path) -> None:
    """Import and rate again under cProfile, into a second database, and show the top."""
    _, env = fresh_db("profile.db")
    for name, cli in (("import", ["import", str(battles)]), ("ratings", ["ratings", "compute"])):
        out = work / f"{name}.prof"
        run = run_cli(cli, env, work, prefix=["-m", "cProfile", "-o", str(out)])
        check_run(f"profiled arena {name}", run)
        print_profile(
            out,
            f"arena {' '.join(cli[:2]) if name == 'ratings' else 'import'}, "
            f"{run.wall:.1f} s under the profiler",
            25,
        )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as err:
        print(f"bench.api: {err}", file=sys.stderr)
        sys.exit(2)
