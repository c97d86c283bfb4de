"""`create_app(settings)` builds everything the process holds: no module globals."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie

import httpx
from fastapi import FastAPI, Request
from sqlalchemy.engine import Engine
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arena import api
from arena.battles import BattleService
from arena.config import ArenaConfig, Settings, load_config
from arena.db import check_current, make_engine
from arena.errors import SnapshotError
from arena.jobs import Job, Jobs
from arena.leaderboard import SnapshotReader
from arena.router import Router
from arena.store import Store

log = logging.getLogger(__name__)

VOTER_COOKIE = "arena_voter"
# The export API and health checks are read by scripts and caches: no cookie, so that a shared
# cache may keep their responses.
NO_COOKIE_PATHS = ("/api/v1", "/healthz")


@dataclass
class App:
    settings: Settings
    config: ArenaConfig
    engine: Engine
    store: Store
    http: httpx.AsyncClient
    router: Router
    battles: BattleService
    snapshots: SnapshotReader
    jobs: Jobs
    export_salt: bytes
    asgi: FastAPI


def create_app(
    settings: Settings,
    *,
    config: ArenaConfig | None = None,
    http: httpx.AsyncClient | None = None,
    with_ui: bool = True,
) -> App:
    """Load the registry, open the database (which must be migrated) and wire the app.

    Raises `ConfigError` or `StorageError` before anything starts serving.
    """
    config = config or load_config(settings.config_path)
    engine = make_engine(settings.database_url)
    check_current(engine)
    store = Store(engine)
    salt = settings.ip_salt.reveal().encode() if settings.ip_salt else store.ip_salt()
    # One client for every endpoint: a pool sized for hundreds of concurrent streams.
    http = http or httpx.AsyncClient(
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200),
        follow_redirects=False,
    )
    router = Router(config, http)
    battles = BattleService(store, router, config, salt)
    jobs = Jobs(
        engine,
        [
            Job("sweep", SWEEP_INTERVAL, battles.sweep, ttl=SWEEP_INTERVAL),
            Job(
                "ratings",
                config.ratings.interval_minutes * 60,
                lambda: ratings_in_child(settings),
                ttl=RATINGS_TTL,
            ),
        ],
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobs.start()
        # The tagger loads its language model on first use (about 0.5 s): load it now, in a
        # thread, rather than during the first voter's battle.
        warm = asyncio.create_task(asyncio.to_thread(battles.tagger.tag, "warm up"))
        yield
        await warm
        await jobs.stop()
        await http.aclose()
        engine.dispose()

    asgi = FastAPI(title=config.title, lifespan=lifespan, docs_url=None, redoc_url=None)
    app = App(
        settings,
        config,
        engine,
        store,
        http,
        router,
        battles,
        SnapshotReader(engine),
        jobs,
        store.secret("export_salt"),
        asgi,
    )
    asgi.state.arena = app
    asgi.add_middleware(VoterCookie)
    asgi.include_router(api.router)
    asgi.add_api_route("/healthz", api.healthz, methods=["GET", "HEAD"], include_in_schema=False)
    v1 = api.v1()
    v1.state.arena = app
    asgi.mount("/api/v1", v1)
    if with_ui:
        from arena import ui  # the only importer of gradio

        ui.mount(app)
    return app


SWEEP_INTERVAL = 300.0  # seconds between sweeps for stale battles
# The ratings lease is renewed while a run lasts; a process that died holding it blocks the
# next run for this long at most.
RATINGS_TTL = 300.0


async def ratings_in_child(settings: Settings) -> None:
    """One ratings run in a child process (`arena ratings compute`): the fit holds a core for
    seconds, and in this process it would take the GIL from the streams (issue: the fit runs
    off the event loop). The parent holds the job's lease while the child runs."""
    env = {
        **os.environ,
        "ARENA_DATABASE_URL": settings.database_url,
        "ARENA_CONFIG": str(settings.config_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arena",
        "ratings",
        "compute",
        "--no-lease",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise SnapshotError(lines[-1] if lines else f"exit status {proc.returncode}")
    lines = out.decode("utf-8", "replace").strip().splitlines()
    log.info("ratings: %s", lines[-1] if lines else "done")


class VoterCookie:
    """Give every browser an anonymous voter id; nothing about the person is in it.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    wraps every streamed event and disconnect check, which cost a tenth of the app's
    CPU under load (bench/battles.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith(NO_COOKIE_PATHS)
            or VOTER_COOKIE in Request(scope).cookies
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = SimpleCookie()
                cookie[VOTER_COOKIE] = secrets.token_urlsafe(18)
                morsel = cookie[VOTER_COOKIE]
                morsel["max-age"] = 365 * 24 * 3600
                morsel["path"] = "/"
                morsel["httponly"] = True
                morsel["samesite"] = "lax"
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", morsel.OutputString())
            await send(message)

        await self.app(scope, receive, send_with_cookie)
