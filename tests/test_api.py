"""The HTTP API in-process through httpx's ASGI transport, and the CLI's db command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from arena.app import create_app
from arena.config import Settings, parse_config
from arena.errors import StorageError
from arena.identity import VOTER_COOKIE
from tests.servers import demo_config_data

ROOT = Path(__file__).resolve().parent.parent


async def test_health_and_voter_cookie(sqlite_url: str, demo_url: str) -> None:
    config = parse_config(demo_config_data(demo_url))
    app = create_app(Settings(database_url=sqlite_url), config=config, with_ui=False)
    transport = httpx.ASGITransport(app=app.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://arena") as client:
        response = await client.get("/api/health")
        assert response.json() == {"status": "ok", "demo": True, "votes": 0}
        cookie = response.cookies.get(VOTER_COOKIE)
        assert cookie and len(cookie) >= 20
        again = await client.get("/api/health")  # the client now sends the cookie back
        assert VOTER_COOKIE not in again.cookies


def test_refuses_unmigrated_database(tmp_path: Path, demo_url: str) -> None:
    config = parse_config(demo_config_data(demo_url))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(StorageError, match="arena db upgrade"):
        create_app(settings, config=config, with_ui=False)


def test_cli_db_upgrade_then_check(tmp_path: Path) -> None:
    env = {
        "ARENA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PATH": "/usr/bin:/bin",
        "ARENA_CONFIG": str(ROOT / "arena" / "demo.toml"),
    }
    up = subprocess.run(
        [sys.executable, "-m", "arena", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    assert "up to date" in up.stdout and (tmp_path / "cli.db").exists()
    check = subprocess.run(
        [sys.executable, "-m", "arena", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "demo-reasoner" in check.stdout


@pytest.mark.parametrize(
    ("url", "args", "message"),
    [
        ("sqlite:///{tmp}/x.db", ["downgrade", "nonsense"], "Can't locate revision"),
        ("postgresql://postgres@127.0.0.1:1/none", ["upgrade"], "cannot open the database"),
        ("bogus", ["upgrade"], "not a database URL"),
    ],
)
def test_cli_db_errors_are_one_line(tmp_path: Path, url: str, args: list, message: str) -> None:
    env = {"ARENA_DATABASE_URL": url.format(tmp=tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "arena", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("arena: error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
