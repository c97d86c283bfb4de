"""The `arena` command as an operator meets it: real processes, real signals, real pipes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from arena import db
from arena.demo_models import create_demo_app
from tests.servers import demo_config_data, free_port, serve, write_config

ROOT = Path(__file__).resolve().parents[1]
PROC = Path("/proc")

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="reads child processes from /proc")


def arena_env(tmp_path: Path, demo_port: int) -> dict[str, str]:
    """A registry over a demo server on `demo_port`, a new SQLite file and a free arena port."""
    config = write_config(tmp_path, demo_config_data(f"http://127.0.0.1:{demo_port}"))
    return {
        **os.environ,
        "ARENA_CONFIG": str(config),
        "ARENA_DATABASE_URL": f"sqlite:///{tmp_path / 'arena.db'}",
        "ARENA_PORT": str(free_port()),
    }


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] parent, [19] start."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its start time (so a reused id is not mistaken)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if fields := _stat(child):
            found[child] = fields[19]
            todo.extend(children.get(child, []))
    return found


def running(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def arena_run(tmp_path: Path, demo_port: int) -> Iterator[Run]:
    """`arena run` in a session of its own, serving; whatever is left of the session at the
    end is killed, so a failing test leaves no process behind either."""
    env = arena_env(tmp_path, demo_port)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arena", "run", "--demo-port", str(demo_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = Run(proc, f"http://127.0.0.1:{env['ARENA_PORT']}", log)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(run.url + "/api/health", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"arena run did not serve:\n{run.output()[-3000:]}")
                time.sleep(0.2)
        yield run
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- 1. a stop signal stops the demo model server too ---------------------------------------------


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [
        (signal.SIGTERM, False),  # kill PID, systemd, docker stop
        (signal.SIGINT, False),  # kill -INT PID
        (signal.SIGINT, True),  # Ctrl-C in the terminal: the whole process group
        (signal.SIGHUP, False),  # the terminal closed
    ],
    ids=["SIGTERM", "SIGINT", "ctrl-c", "SIGHUP"],
)
def test_a_stop_signal_leaves_no_child(
    tmp_path: Path, sig: signal.Signals, whole_group: bool
) -> None:
    demo_port = free_port()
    with arena_run(tmp_path, demo_port) as run:
        children = descendants(run.proc.pid)
        assert any("demo-models" in cmdline(pid) for pid in children), children
        assert accepts(demo_port)
        if whole_group:
            os.killpg(run.proc.pid, sig)
        else:
            run.proc.send_signal(sig)
        status = run.proc.wait(timeout=30)
        time.sleep(0.2)  # a child that is still being killed gets a moment
        left = {pid: cmdline(pid) for pid, start in children.items() if running(pid, start)}
        assert left == {}, f"left running after {sig.name}: {left}"
        assert not accepts(demo_port), f"something still listens on the demo port {demo_port}"
        assert status == 128 + sig, run.output()[-2000:]
        assert "Traceback" not in run.output()


def test_reuses_a_demo_server_it_did_not_start_and_says_so(tmp_path: Path) -> None:
    with serve(create_demo_app(latency=0.0, tokens_per_second=0), "/health") as demo_url:
        demo_port = int(demo_url.rsplit(":", 1)[1])
        with arena_run(tmp_path, demo_port) as run:
            assert not any("demo-models" in cmdline(p) for p in descendants(run.proc.pid))
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(timeout=30) == 128 + signal.SIGTERM
            said = [line for line in run.output().splitlines() if "demo model server" in line]
            assert len(said) == 1, run.output()
            assert f"reusing the demo model server already running at {demo_url}" in said[0]
            assert f"(process {os.getpid()})" in said[0] and "did not start it" in said[0]
        # Not ours to stop: it still answers.
        assert httpx.get(demo_url + "/health").json()["demo"] is True


def test_refuses_a_demo_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "arena", "run", "--demo-port", str(port)],
            env=arena_env(tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"arena: error: port {port} is taken by something that is not the demo model server: "
        "stop it, or start with --demo-port P and a registry whose endpoints use port P"
    ]


# -- 2. standard output closed early -------------------------------------------------------------


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `arena ARGS` writing into a pipe whose reader has already gone, as in `| head -1`
    once head has its line: every write to standard output fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        env = {**os.environ, "ARENA_CONFIG": str(ROOT / "arena" / "demo.toml")}
        return subprocess.run(
            [sys.executable, "-m", "arena", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


# (`--help` was quiet already: argparse ignores a failed write of its own.)
@pytest.mark.parametrize("args", [["check-config"], ["settings", "--markdown"]])
def test_a_closed_pipe_ends_the_command_quietly(args: list[str]) -> None:
    result = closed_pipe_run(*args)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as for `yes | head -1`


def test_head_takes_the_first_line(tmp_path: Path) -> None:
    env = arena_env(tmp_path, free_port())
    result = subprocess.run(
        f"{sys.executable} -m arena check-config | head -1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == f"{env['ARENA_CONFIG']}: OK, 4 models\n"
    assert result.stderr == "" and result.returncode == 0


def test_check_config_says_what_makes_each_variant_a_contestant() -> None:
    # Variants of the same weights differ only in params, budgets and strategies (issue 7).
    result = arena_cli("check-config")
    assert result.returncode == 0, result.stderr
    lines = {line.split(":")[0].strip(): line for line in result.stdout.splitlines()[1:]}
    assert "family" not in lines["demo-math"]  # its own family: nothing to say
    assert "reasoning_effort='high'" in lines["demo-math-high-effort"]
    assert "family demo-math" in lines["demo-math-high-effort"]
    assert "best_of_n of 8, reward model reward (classify)" in lines["demo-math-best-of-8"]
    assert "product of step scores, reward model prm" in lines["demo-math-prm-8"]
    assert "self_consistency of 8" in lines["demo-math-self-consistency-8"]


# -- 3. `arena db upgrade` says what it did ------------------------------------------------------


def arena_cli(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`arena ARGS` on the shipped demo registry (and `database_url`, when given)."""
    env = {**os.environ, "ARENA_CONFIG": str(ROOT / "arena" / "demo.toml")}
    if database_url is not None:
        env["ARENA_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "arena", *args], env=env, capture_output=True, text=True, timeout=90
    )


def test_db_upgrade_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'arena.db'}"
    head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    created = arena_cli("db", "upgrade", database_url=url)
    assert (created.returncode, created.stderr) == (0, "")
    assert created.stdout == (
        f"new database at {url}: created every table, now up to date at revision {head}\n"
    )
    again = arena_cli("db", "upgrade", database_url=url)
    assert again.stdout == f"database at {url}: already up to date at revision {head}\n"

    down = arena_cli("db", "downgrade", "0002", database_url=url)
    assert down.stdout == f"database at {url}: downgraded from revision {head} to 0002\n"
    upgraded = arena_cli("db", "upgrade", database_url=url)
    assert upgraded.stdout == (
        f"database at {url}: upgraded from revision 0002 to {head}, now up to date\n"
    )
    assert db.current_revision(url) == head == db.head_revision()


def test_db_messages_hide_the_password() -> None:
    shown = db.safe_url("postgresql://arena:s3cret@db.example:5432/arena")
    assert shown == "postgresql://arena:***@db.example:5432/arena"


# -- 4. an expected error is one line, not a traceback --------------------------------------------


@pytest.mark.parametrize(
    "args", [["db", "upgrade"], ["serve"], ["ratings", "compute"], ["export", "battles", "-"]]
)
def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path, args: list[str]) -> None:
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_bytes(b"these are notes, not SQLite\n" * 200)
    result = arena_cli(*args, database_url=f"sqlite:///{not_a_database}")
    assert result.stderr == "arena: error: cannot open the database: file is not a database\n"
    assert result.returncode == 2
    assert not_a_database.read_bytes().startswith(b"these are notes")
