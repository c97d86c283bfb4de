"""Two arena processes behind nginx, on PostgreSQL, started by `arena cluster` with the shipped
deploy/nginx/arena.conf (issue 10, §2). Skips where nginx is not installed (Debian: `nginx`;
.ci/run installs it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from arena import db
from arena.cluster import SITE, find_nginx, site_config
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
    for line in ("hash $arena_affinity consistent;", "proxy_buffering off;", "$remote_addr;"):
        assert line in out


@dataclass
class Cluster:
    url: str
    proc: subprocess.Popen[bytes]
    database_url: str


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


@pytest.fixture
def cluster(tmp_path: Path, demo_url: str, postgres_url: str) -> Iterator[Cluster]:
    data = demo_config_data(
        demo_url, {f"contestant-{n}": m for n, m in [("one", "terse"), ("two", "verbose")]}
    )
    port = free_port()
    env = {
        **os.environ,
        "ARENA_CONFIG": str(write_config(tmp_path, data)),
        "ARENA_DATABASE_URL": postgres_url,
    }
    argv = [sys.executable, "-m", "arena", "cluster", "--processes", "2", "--port", str(port)]
    argv += ["--first-port", str(ports_in_a_row(2, avoid=port))]
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline, "cluster did not start"
            time.sleep(0.2)
    try:
        yield Cluster(url, proc, postgres_url)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def voter(url: str) -> Client:
    """A browser of its own: the cookie the page gives on first load, sent with every call."""
    cookie = httpx.get(url + "/").cookies["arena_voter"]
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
