from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from arena import db
from arena.app import create_app
from arena.config import Settings
from arena.demo_models import create_demo_app
from tests.servers import Recorder, free_port, recording_proxy, serve, write_config

PG_ADMIN_URL = os.environ.get(
    "ARENA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def no_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key, so nothing can reach a paid endpoint by accident."""
    for name in list(os.environ):
        if name.endswith("_API_KEY"):
            monkeypatch.delenv(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'arena.db'}"
    db.upgrade(url)
    return url


def _postgres_available() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as err:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(err).__name__}"


@pytest.fixture(scope="session")
def postgres_reason() -> str | None:
    return _postgres_available()


@pytest.fixture
def postgres_url(postgres_reason: str | None) -> Iterator[str]:
    """A fresh, migrated database of our own on the shared server, dropped afterwards."""
    if postgres_reason:
        pytest.skip(postgres_reason)
    name = f"arena_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        db.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on both databases."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def demo_url() -> Iterator[str]:
    """The demo model server over real HTTP, fast enough for tests."""
    with serve(create_demo_app(latency=0.0, tokens_per_second=0), "/health") as url:
        yield url


@pytest.fixture(scope="session")
def slow_demo_url() -> Iterator[str]:
    """The demo model server with a visible delay per token."""
    with serve(create_demo_app(latency=0.3, tokens_per_second=20), "/health") as url:
        yield url


@pytest.fixture
def arena_server(tmp_path: Path, sqlite_url: str):  # type: ignore[no-untyped-def]
    """A function that starts an arena for a registry (on SQLite unless a migrated
    `database_url` is given) behind a recording proxy; it returns (proxy URL, recorder)."""
    started = []

    def start(data: dict, database_url: str | None = None) -> tuple[str, Recorder]:
        settings = Settings(
            config_path=write_config(tmp_path, data),
            database_url=database_url or sqlite_url,
            port=free_port(),
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
