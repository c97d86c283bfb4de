"""Two arena processes behind nginx, on PostgreSQL, started by `arena cluster` with the shipped
deploy/nginx/arena.conf (issue 10, §2). Skips where nginx is not installed (Debian: `nginx`;
.ci/run installs it)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from arena import db
from arena.cli import KEEP_ALIVE_SECONDS
from arena.cluster import SITE, find_nginx, site_config
from arena.lifecycle import BattleState
from tests.servers import demo_config_data, free_port, write_config

pytestmark = pytest.mark.skipif(
    find_nginx() is None, reason="nginx is not installed (Debian package `nginx`)"
)


def test_site_config_keeps_the_shipped_file_but_its_ports() -> None:
    text = SITE.read_text()
    out = site_config(text, [9001, 9002, 9003], 9999)
    assert "listen 127.0.0.1:9999;" in out and "listen 8080" not in out
    servers = [line.strip() for line in out.splitlines() if line.strip().startswith("server 1")]
    assert servers == [
        f"server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" for port in (9001, 9002, 9003)
    ]
    # Everything else is the shipped file: the sticky hash, streaming, forwarded address.
    kept = ("hash $arena_affinity consistent;", "zone arena 64k;", "proxy_buffering off;")
    for line in (*kept, "$remote_addr;"):
        assert line in out


def test_the_balancer_closes_idle_connections_before_the_arena_does() -> None:
    # Otherwise nginx sends a request down a connection the arena is closing, gets a reset,
    # and with max_fails=1 counts the process as dead; two resets, and a burst of voters got
    # "no live upstreams" (bench.battles --replicas 2 --voters 500, issue 10).
    found = re.search(r"^\s*keepalive_timeout (\d+)s;", SITE.read_text(), re.MULTILINE)
    assert found is not None
    assert int(found.group(1)) < KEEP_ALIVE_SECONDS


@dataclass
class Cluster:
    url: str
    proc: subprocess.Popen[bytes]
    database_url: str
    ports: tuple[int, ...] = ()

    def all_serving(self) -> bool:
        """Every arena process answers (a restarted one joins the balancer's pool again)."""
        try:
            for port in self.ports:
                httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).raise_for_status()
        except httpx.HTTPError:
            return False
        return True


def ports_in_a_row(count: int, avoid: int) -> int:
    """The first of `count` consecutive free ports (`arena cluster` numbers its processes)."""
    while True:
        first = free_port()
        ports = range(first, first + count)
        if avoid not in ports and all(_free(p) for p in ports):
            return first


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_cluster(
    tmp_path: Path, data: dict[str, Any], database_url: str, processes: int
) -> Cluster:
    """`arena cluster` as an operator runs it, in a session of its own (killed whole after)."""
    port = free_port()
    env = {
        **os.environ,
        "ARENA_CONFIG": str(write_config(tmp_path, data)),
        "ARENA_DATABASE_URL": database_url,
    }
    argv = [sys.executable, "-m", "arena", "cluster", "--processes", str(processes)]
    first = ports_in_a_row(processes, avoid=port)
    argv += ["--port", str(port), "--first-port", str(first)]
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1).raise_for_status()
            return Cluster(url, proc, database_url, tuple(range(first, first + processes)))
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_cluster(proc)
                raise AssertionError("the cluster did not start") from None
            time.sleep(0.2)


def stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def cluster(tmp_path: Path, demo_url: str, postgres_url: str) -> Iterator[Cluster]:
    data = demo_config_data(
        demo_url, {f"contestant-{n}": m for n, m in [("one", "terse"), ("two", "verbose")]}
    )
    found = start_cluster(tmp_path, data, postgres_url, 2)
    try:
        yield found
    finally:
        stop_cluster(found.proc)


def voter(url: str, cookie: str | None = None) -> Client:
    """A browser of its own: the cookie the page gives on first load (or `cookie`, a reload),
    sent with every call."""
    cookie = cookie or httpx.get(url + "/").cookies["arena_voter"]
    headers = {"Cookie": f"arena_voter={cookie}"}
    return Client(
        url, verbose=False, download_files=False, analytics_enabled=False, headers=headers
    )


def test_battles_through_the_balancer_reach_both_processes(cluster: Cluster) -> None:
    for i in range(8):
        client = voter(cluster.url)
        job = client.submit(f"Question {i}", api_name="/ask")
        job.result(timeout=60)
        assert "Which answer is better?" in job.outputs()[-1][3]
        client.predict(api_name="/vote_tie")
    engine = db.make_engine(cluster.database_url)
    with engine.connect() as conn:
        owners = conn.execute(sa.select(db.battles.c.owner)).scalars().all()
        votes = conn.scalar(sa.select(sa.func.count()).select_from(db.votes))
        instances = conn.scalar(sa.select(sa.func.count()).select_from(db.instances))
    engine.dispose()
    assert votes == 8 and instances == 2
    assert len(set(owners)) == 2, "every voter was sent to the same process"
    # SIGTERM stops nginx and every arena process, and nothing is left.
    children = subprocess.run(
        ["pgrep", "-s", str(cluster.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-s", str(cluster.proc.pid)], capture_output=True, text=True)
    assert len(children) >= 4 and left.stdout.split() == []


def test_a_killed_process_is_restarted_and_the_others_serve_on(cluster: Cluster) -> None:
    engine = db.make_engine(cluster.database_url)
    with engine.connect() as conn:
        before = set(conn.execute(sa.select(db.instances.c.id)).scalars())
    victim = int(sorted(before)[0].split(":")[1])  # instance ids are host:pid:random
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # `arena cluster` starts it again; the new one lists itself on start
        with engine.connect() as conn:
            now = set(conn.execute(sa.select(db.instances.c.id)).scalars())
        if len(now - before) == 1:
            break
        assert time.monotonic() < deadline, "the killed process was not started again"
        time.sleep(0.2)
    for i in range(4):  # every voter is served, whichever process their cookie maps to
        client = voter(cluster.url)
        job = client.submit(f"After the kill {i}", api_name="/ask")
        job.result(timeout=60)
        client.predict(api_name="/vote_a")
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(db.votes)) == 4
    engine.dispose()


# -- durability under load (issue 10, §3) ---------------------------------------------------


async def _keep_voting(url: str, stop: threading.Event, voters: int) -> dict[str, int]:
    """`voters` browsers playing battles back to back until `stop` is set, speaking
    Gradio's queue protocol as bench/battles.py does; returns the votes acknowledged to each
    voter id (a vote whose reply said so)."""
    import asyncio

    from bench.battles import Voter, endpoints, play

    eps = await asyncio.to_thread(endpoints, url)
    acked: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0)) as client:

        async def one(index: int) -> None:
            cookie = ""
            while not stop.is_set():
                try:
                    if not cookie:  # a browser's first page load
                        cookie = (await client.get("/")).cookies["arena_voter"]
                        client.cookies.clear()
                    voter = Voter(index, cookie.split(".")[0], cookie)
                    await play(client, eps, voter, f"Voter {index}: a question", 0.0)
                except (httpx.HTTPError, KeyError):
                    await asyncio.sleep(0.2)  # the balancer had no live process for a moment
                    continue
                if voter.error is None:
                    acked[voter.voter_id] = acked.get(voter.voter_id, 0) + 1
                else:
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(one(i) for i in range(voters)))
    return acked


def wait_serving(cluster: Cluster) -> None:
    deadline = time.monotonic() + 60
    while not cluster.all_serving():  # a killed process is back, serving
        assert time.monotonic() < deadline, "a killed process did not serve again"
        time.sleep(0.2)


def serving_pids(cluster: Cluster) -> list[int]:
    """The `arena serve` processes `arena cluster` runs (its session's), in a stable order."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[3]) == cluster.proc.pid and b"serve" in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)


def _votes_by_voter(database_url: str) -> dict[str, int]:
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(db.votes.c.voter_id, sa.func.count()).group_by(db.votes.c.voter_id)
        ).all()
    engine.dispose()
    return {str(voter): int(n) for voter, n in rows}


def _serves_a_new_voter(cluster: Cluster) -> None:
    """A voter arriving after the kills plays a battle. Only a page that lost its Gradio
    session (its queue/data reached a process its queue/join had not: gradio_client cancels
    the job) is reloaded, once, with the same cookie, as a browser would; it is said in a
    warning. Any other failure, or a second loss, fails with nginx's log."""
    cookie = httpx.get(cluster.url + "/").cookies["arena_voter"]
    for attempt in range(2):
        job = voter(cluster.url, cookie).submit("After the kills", api_name="/ask")
        try:
            job.result(timeout=60)
        except concurrent.futures.CancelledError as exc:
            if attempt:
                raise AssertionError(f"no battle after the kills:\n{nginx_log(cluster)}") from exc
            warnings.warn("a page lost its session after the kills; reloaded it", stacklevel=2)
            continue
        assert "Which answer is better?" in job.outputs()[-1][3]
        return


def nginx_log(cluster: Cluster) -> str:
    """The end of the error log of the nginx that `arena cluster` runs (its -p folder)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:  # nginx renames itself "nginx: master process /usr/sbin/nginx -p …"
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
            ppid = int((cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == cluster.proc.pid and "-p" in argv and argv[0].startswith("nginx"):
            log = Path(argv[argv.index("-p") + 1]) / "error.log"
            return "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    return "(nginx's error log was not found)"


def _answering(database_url: str) -> int:
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        n = conn.scalar(
            sa.select(sa.func.count())
            .select_from(db.battles)
            .where(db.battles.c.status == BattleState.ANSWERING.value)
        )
    engine.dispose()
    return int(n or 0)


@pytest.mark.slow
@pytest.mark.parametrize(("processes", "database"), [(1, "sqlite"), (2, "postgres")])
def test_no_acknowledged_vote_is_lost_when_processes_are_killed_under_load(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    slow_demo_url: str,
    processes: int,
    database: str,
) -> None:
    """Voters play battles back to back while arena processes are killed with SIGKILL, three
    times: every acknowledged vote is stored, no battle is left answering, and the arena serves
    again without a manual step. One process on SQLite (WAL, busy timeout: concurrent writers
    wait rather than fail) and two on PostgreSQL, as the issue asks."""
    import asyncio

    data = demo_config_data(
        slow_demo_url,
        {"contestant-one": "terse", "contestant-two": "verbose"},
        heartbeat_seconds=0.5,
        owner_gone_seconds=2,
    )
    database_url = str(request.getfixturevalue(f"{database}_url"))
    cluster = start_cluster(tmp_path, data, database_url, processes)
    try:
        killed: list[int] = []

        stop = threading.Event()

        def kill_three() -> None:
            try:
                for turn in range(3):
                    wait_serving(cluster)
                    time.sleep(4)  # voters play on a serving arena, then it dies mid-battle
                    pids = serving_pids(cluster)
                    pid = pids[turn % len(pids)]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                wait_serving(cluster)
                time.sleep(4)
            finally:
                stop.set()

        killer = threading.Thread(target=kill_three)
        killer.start()
        acked = asyncio.run(_keep_voting(cluster.url, stop, voters=12))
        killer.join()
        assert len(killed) == 3 and sum(acked.values()) > 0
        print(f"{sum(acked.values())} votes acknowledged to {len(acked)} voters; 3 kills")
        stored = _votes_by_voter(database_url)
        lost = {v: n - stored.get(v, 0) for v, n in acked.items() if stored.get(v, 0) < n}
        assert not lost, f"acknowledged votes missing from the database: {lost}"
        deadline = time.monotonic() + 30  # cut-off battles end as abandoned, never stuck
        while _answering(database_url):
            assert time.monotonic() < deadline, "battles were left answering"
            time.sleep(0.5)
        # The restarted processes serve with no manual step, once they have started (the last
        # kill may have left none up for a few seconds).
        wait_serving(cluster)
        time.sleep(11)  # nginx tries a server it marked failed again after fail_timeout (10 s)
        _serves_a_new_voter(cluster)
    finally:
        stop_cluster(cluster.proc)
