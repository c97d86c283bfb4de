"""`create_app(settings)` builds everything the process holds: no module globals."""

from __future__ import annotations

import asyncio
import logging
import secrets
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
from arena.router import Router
from arena.store import Store

log = logging.getLogger(__name__)

VOTER_COOKIE = "arena_voter"


@dataclass
class App:
    settings: Settings
    config: ArenaConfig
    engine: Engine
    store: Store
    http: httpx.AsyncClient
    router: Router
    battles: BattleService
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep_forever(battles))
        yield
        sweeper.cancel()
        await http.aclose()
        engine.dispose()

    asgi = FastAPI(title=config.title, lifespan=lifespan, docs_url=None, redoc_url=None)
    app = App(settings, config, engine, store, http, router, battles, asgi)
    asgi.state.arena = app
    asgi.add_middleware(VoterCookie)
    asgi.include_router(api.router)
    if with_ui:
        from arena import ui  # the only importer of gradio

        ui.mount(app)
    return app


SWEEP_INTERVAL = 300.0  # seconds between sweeps for stale battles


async def _sweep_forever(battles: BattleService) -> None:
    while True:
        try:
            await battles.sweep()
        except Exception:  # a database hiccup must not end the sweeper
            log.exception("stale-battle sweep failed")
        await asyncio.sleep(SWEEP_INTERVAL)


class VoterCookie:
    """Give every browser an anonymous voter id; nothing about the person is in it.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    wraps every streamed event and disconnect check, which cost a tenth of the app's
    CPU under load (bench/battles.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or VOTER_COOKIE in Request(scope).cookies:
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
