"""`arena cluster`: N `arena serve` processes behind nginx on this machine (issue 10).

The shipped nginx site file (deploy/nginx/arena.conf) is used as it is, with its upstream
servers and listening port rewritten for this run; nginx runs unprivileged with a prefix folder
of its own. An arena process that dies is started again; a stop signal stops them all.
docs/deploy.md has the same pieces as systemd units, for a real deployment.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from arena.errors import ArenaError

log = logging.getLogger("arena.cluster")

SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "arena.conf"
HOST = "127.0.0.1"
START_TIMEOUT = 60.0
POLL = 0.5

_SERVERS = re.compile(r"^(\s*)server\s+\S+:\d+\b[^;]*;\n", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen\s+\S+;", re.MULTILINE)


def site_config(text: str, ports: Sequence[int], listen: int) -> str:
    """The site file with one upstream server per arena port, and nginx on `listen`."""
    found = list(_SERVERS.finditer(text))
    if not found or not _LISTEN.search(text):
        raise ArenaError("the nginx site file has no upstream `server` or `listen` line")
    indent, options = found[0].group(1), found[0].group(0).split(";")[0].split()[2:]
    lines = "".join(
        f"{indent}server {HOST}:{port}{''.join(' ' + o for o in options)};\n" for port in ports
    )
    text = text[: found[0].start()] + lines + _SERVERS.sub("", text[found[0].start() :])
    return _LISTEN.sub(lambda m: f"{m.group(1)}listen {HOST}:{listen};", text, count=1)


def nginx_config(prefix: Path, site: Path) -> str:
    """A main nginx.conf that needs no root: every path inside `prefix`."""
    temp = " ".join(f"{name}_temp_path {prefix / name};" for name in _TEMP_PATHS)
    return (
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "worker_processes auto;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {site};\n}}\n"
    )


_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: Mapping[str, str]
    health: str  # a URL that answers once it serves
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=dict(self.env))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                httpx.get(self.health, timeout=1.0)
                return
            except httpx.HTTPError:
                if self.exited() or time.monotonic() > deadline:
                    raise ArenaError(f"{self.name} did not start") from None
                time.sleep(0.1)

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def arena_children(count: int, first_port: int) -> list[Child]:
    out = []
    for i in range(count):
        port = first_port + i
        env = {**os.environ, "ARENA_PORT": str(port), "ARENA_HOST": HOST}
        argv = [sys.executable, "-m", "arena", "serve"]
        out.append(Child(f"arena:{port}", argv, env, f"http://{HOST}:{port}/api/health"))
    return out


def nginx_child(nginx: str, prefix: Path, ports: Sequence[int], listen: int, site: Path) -> Child:
    for name in _TEMP_PATHS:
        (prefix / name).mkdir(exist_ok=True)
    (prefix / "arena.conf").write_text(site_config(site.read_text(), ports, listen))
    (prefix / "nginx.conf").write_text(nginx_config(prefix, prefix / "arena.conf"))
    argv = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log")]
    argv += ["-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    return Child("nginx", argv, dict(os.environ), f"http://{HOST}:{listen}/healthz")


def find_nginx() -> str | None:
    """Debian installs nginx in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def run(processes: int, listen: int, first_port: int, site: Path = SITE) -> None:
    """Start everything, restart an arena process that dies, until a stop signal (raised as
    an exception by the caller's handler) or nginx itself exits."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        raise ArenaError("nginx is not installed (Debian: apt-get install nginx)")
    arenas = arena_children(processes, first_port)
    with tempfile.TemporaryDirectory(prefix="arena-nginx-") as tmp:
        front = nginx_child(
            nginx, Path(tmp), [first_port + i for i in range(processes)], listen, site
        )
        try:
            for child in arenas:
                child.start()
            for child in arenas:
                child.wait_ready()
            front.start()
            front.wait_ready()
            print(
                f"Arena: {processes} processes behind nginx on http://{HOST}:{listen}", flush=True
            )
            supervise(arenas, front)
        finally:
            front.stop()
            for child in arenas:
                child.stop()


def supervise(arenas: Sequence[Child], front: Child) -> None:
    while not front.exited():
        for child in arenas:
            if child.exited():
                code = child.process.returncode if child.process else None
                log.warning("%s exited (status %s): starting it again", child.name, code)
                child.start()
        time.sleep(POLL)
    raise ArenaError("nginx exited")
