"""`create_app(settings)` builds everything the process holds: no module globals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import httpx
from fastapi import FastAPI, Request
from sqlalchemy.engine import Engine
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arena import api
from arena.admin import admin_app
from arena.battles import BattleService
from arena.config import ArenaConfig, Registry, Settings, load_config
from arena.db import check_current, make_engine
from arena.errors import ConfigError, SnapshotError
from arena.identity import COOKIE_MAX_AGE, VOTER_COOKIE, Identity, Limits, limit_storage
from arena.jobs import Job, Jobs, holder_id
from arena.leaderboard import SnapshotReader
from arena.router import Router
from arena.store import Store

log = logging.getLogger(__name__)

# The export API and health checks are read by scripts and caches: no cookie, so that a shared
# cache may keep their responses. Nor do the page's event calls get one: a browser has its cookie
# from the page load before its first event, and a script that starts with an event keeps its
# session's voter id for the whole battle (a cookie set by its first call would make its vote
# another voter's; review of issue 8).
NO_COOKIE_PATHS = ("/api/v1", "/healthz", "/gradio_api/")


@dataclass
class App:
    settings: Settings
    registry: Registry
    engine: Engine
    store: Store
    http: httpx.AsyncClient
    router: Router
    battles: BattleService
    snapshots: SnapshotReader
    jobs: Jobs
    export_salt: bytes
    identity: Identity
    asgi: FastAPI

    @property
    def config(self) -> ArenaConfig:
        """The registry in force (it may be reloaded: read it once per use)."""
        return self.registry.current


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
    registry = Registry(config, settings.config_path)
    engine = make_engine(settings.database_url)
    check_current(engine)
    store = Store(engine)
    identity = make_identity(settings, registry, store)
    # One client for every endpoint: a pool sized for hundreds of concurrent streams.
    http = http or httpx.AsyncClient(
        # An idle connection is dropped before the model server's own keep-alive runs out
        # (uvicorn, under vLLM and SGLang, closes after 5 s): reusing one just as the server
        # closes it fails the request, and with it a side of a battle (review of issue 9).
        limits=httpx.Limits(
            max_connections=2000, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE
        ),
        follow_redirects=False,
    )
    router = Router(registry, http)
    instance = holder_id()
    battles = BattleService(store, router, registry, identity, http=http, instance=instance)
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
            Job(
                "retention",
                RETENTION_INTERVAL if config.privacy.retention_days > 0 else 0,
                lambda: delete_old_text(store, registry),
                ttl=RETENTION_INTERVAL,
            ),
        ],
        holder=instance,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Listed as alive before the first battle: another process would take a battle whose
        # owner it has not heard of for one whose process died.
        await asyncio.to_thread(store.heartbeat, instance)
        beat = asyncio.create_task(heartbeat(store, battles, registry, instance))
        jobs.start()
        # The tagger loads its language model on first use (about 0.5 s): load it now, in a
        # thread, rather than during the first voter's battle.
        warm = asyncio.create_task(asyncio.to_thread(battles.tagger.tag, "warm up"))
        watch = asyncio.create_task(watch_reloads(store, registry))
        health = asyncio.create_task(router.watch_health())
        yield
        for task in (watch, beat, health):
            task.cancel()
        await asyncio.gather(warm, watch, beat, health, return_exceptions=True)
        await jobs.stop()
        await asyncio.to_thread(store.retire, instance)
        await http.aclose()
        engine.dispose()

    asgi = FastAPI(title=config.title, lifespan=lifespan, docs_url=None, redoc_url=None)
    app = App(
        settings,
        registry,
        engine,
        store,
        http,
        router,
        battles,
        SnapshotReader(engine),
        jobs,
        store.secret("export_salt"),
        identity,
        asgi,
    )
    asgi.state.arena = app
    asgi.add_middleware(VoterCookie, identity=identity)
    asgi.add_middleware(
        SecurityHeaders, remote_images=lambda: registry.current.security.remote_images
    )
    # Added last, so it runs first: an oversized body is refused before anything reads it.
    asgi.add_middleware(BodyLimit, limit=lambda: registry.current.limits.max_body_bytes)
    asgi.include_router(api.router)
    asgi.add_api_route("/healthz", api.healthz, methods=["GET", "HEAD"], include_in_schema=False)
    v1 = api.v1()
    v1.state.arena = app
    v1.mount("/admin", admin_app(app))
    asgi.mount("/api/v1", v1)
    if with_ui:
        from arena import ui  # the only importer of gradio

        ui.mount(app)
    return app


SWEEP_INTERVAL = 300.0  # seconds between sweeps for stale battles
KEEPALIVE = 3.0  # seconds an idle connection to a model server is kept for reuse


async def heartbeat(
    store: Store, battles: BattleService, registry: Registry, instance: str
) -> None:
    """Say this process is alive, and abandon the battles of processes that are not, every
    `heartbeat_seconds`: a battle cut off by a crash ends within about `owner_gone_seconds`
    plus one beat, whichever process notices first (issue 10)."""
    while True:
        await asyncio.sleep(registry.current.heartbeat_seconds)
        try:
            await asyncio.to_thread(store.heartbeat, instance)
            await battles.abandon_orphans()
        except Exception as err:  # the database may be back at the next beat
            log.warning("heartbeat failed: %s", str(err).splitlines()[0] if str(err) else err)


RETENTION_INTERVAL = 3600.0  # seconds between deletions of text past its retention


def make_identity(settings: Settings, registry: Registry, store: Store) -> Identity:
    """Keys from the environment; outside production mode, made once and kept in the database
    (every process of one deployment shares them)."""
    config = registry.current
    missing = [
        name
        for name, value in (
            ("ARENA_IP_SALT", settings.ip_salt),
            ("ARENA_SECRET_KEY", settings.secret_key),
        )
        if value is None
    ]
    if config.security.production and missing:
        raise ConfigError(
            f"production mode ([security] production = true) needs {' and '.join(missing)}: "
            "a salt or key kept in the database is in every copy of the database"
        )
    salt = ip_salt(settings, store)
    key = (
        settings.secret_key.reveal().encode() if settings.secret_key else store.secret("cookie_key")
    )
    return Identity(
        secret_key=key,
        ip_salt=salt,
        trusted_proxies=config.security.trusted_proxies,
        limits=Limits(lambda: registry.current.limits, limit_storage(settings.redis_url)),
        banned=store.banned_ips,
    )


RELOAD_KEY = "registry_reload"  # meta row: changed by every reload an administrator asks for
RELOAD_POLL = 10.0  # seconds: every process follows a reload within this long


def announce_reload(store: Store, registry: Registry | None = None) -> str:
    """Tell every process sharing the database to read the registry again; `registry`, the one
    already reloaded here, is marked as up to date."""
    stamp = uuid.uuid4().hex
    store.set_meta(RELOAD_KEY, stamp)
    if registry is not None:
        registry.stamp = stamp
    return stamp


async def watch_reloads(store: Store, registry: Registry, poll: float = RELOAD_POLL) -> None:
    """Reload when another process (or `arena admin reload`) announced one."""
    registry.stamp = await asyncio.to_thread(store.meta, RELOAD_KEY)
    while True:
        await asyncio.sleep(poll)
        try:
            stamp = await asyncio.to_thread(store.meta, RELOAD_KEY)
            if stamp == registry.stamp:
                continue
            registry.stamp = stamp
            config = await asyncio.to_thread(registry.reload)
            log.info("registry reloaded: %d models", len(config.models))
        except ConfigError as err:  # keep serving the registry in force
            log.error("registry reload refused: %s", err)
        except Exception as err:  # the database blinked: try at the next poll
            log.warning("registry reload check failed: %s", err)


def ip_salt(settings: Settings, store: Store) -> bytes:
    return settings.ip_salt.reveal().encode() if settings.ip_salt else store.ip_salt()


async def delete_old_text(store: Store, registry: Registry) -> int:
    days = registry.current.privacy.retention_days
    if days <= 0:
        return 0
    before = datetime.now(UTC) - timedelta(days=days)
    count = await asyncio.to_thread(store.delete_text, before)
    if count:
        log.info("retention: deleted the text of %d battles older than %g days", count, days)
    return count


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
    """Give every browser an anonymous voter id, signed (arena.identity); a missing or forged
    cookie is replaced. Nothing about the person is in it.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    wraps every streamed event and disconnect check, which cost a tenth of the app's
    CPU under load (bench/battles.py).
    """

    def __init__(self, app: ASGIApp, identity: Identity) -> None:
        self.app = app
        self.identity = identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith(NO_COOKIE_PATHS)
            or self.identity.verify_cookie(Request(scope).cookies.get(VOTER_COOKIE))
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = SimpleCookie()
                cookie[VOTER_COOKIE] = self.identity.new_cookie()
                morsel = cookie[VOTER_COOKIE]
                morsel["max-age"] = COOKIE_MAX_AGE
                morsel["path"] = "/"
                morsel["httponly"] = True
                morsel["samesite"] = "lax"
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", morsel.OutputString())
            await send(message)

        await self.app(scope, receive, send_with_cookie)


UPLOAD_PATHS = ("/gradio_api/upload", "/upload")


class SecurityHeaders:
    """A second wall behind the sanitiser (arena/render.py): even markup that slipped through
    could not post a form elsewhere, load an image from another site (unless the operator
    allows remote images), embed an object or reset the page's base address."""

    def __init__(self, app: ASGIApp, remote_images: Callable[[], bool]) -> None:
        self.app = app
        self.remote_images = remote_images

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        images = "img-src * data: blob:" if self.remote_images() else "img-src 'self' data: blob:"
        # No framing by other sites: a page that framed the arena could lure typing onto the
        # vote keys (review of issue 9).
        policy = (
            f"{images}; form-action 'self'; object-src 'none'; base-uri 'self'; "
            "frame-ancestors 'self'"
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", policy)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "same-origin")
                headers.setdefault("x-frame-options", "SAMEORIGIN")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuse a request body over the limit before it is read whole (issue 8, §3): by its
    Content-Length at once, or, for a chunked body, as soon as the bytes read pass the limit.

    In the second case the app has begun reading: it is told the client left (frameworks turn an
    exception raised from `receive` into a 400 of their own), and the 413 is sent in its place.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith(UPLOAD_PATHS):
            # The page has no file inputs; Gradio's upload route would store any file anyone
            # sends and serve it back from the arena's address (review of issue 8).
            await _refuse(send, 403, "This arena takes no file uploads.")
            return
        limit = self.limit()
        length = Request(scope).headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send, limit)
            return
        seen = 0
        started = refused = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    if not started:
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app tripped over the body it was told had gone; the 413 was sent.


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, f"The request is too large (the limit is {limit} bytes).")


async def _refuse(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error, "parameter": None}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
