"""Administration: flag battles and voters, ban addresses, reload the registry, run the ratings.

The same operations back `arena admin …` (on the database directly) and `/api/v1/admin/…` (in a
running process, behind a bearer token: `ARENA_ADMIN_TOKEN`). Without a valid token every admin
route answers 401, whatever the path or method; the token is compared in constant time and never
logged (issue 8, §7).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from arena.errors import ApiParameterError, BattleNotFound, ConfigError
from arena.leaderboard import Snapshot
from arena.store import Store

if TYPE_CHECKING:
    from arena.app import App

log = logging.getLogger(__name__)

MAX_REASON = 500
DEFAULT_REASON = "flagged by an administrator"


def reason_text(value: Any) -> str:
    if value is None:
        return ""
    if (
        not isinstance(value, str)
        or len(value) > MAX_REASON
        or "\x00" in value
        or not _encodable(value)
    ):
        raise ApiParameterError("reason", f"reason must be text of at most {MAX_REASON} characters")
    return value.strip()


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def check_ip(value: Any) -> str:
    """An address as the hash input: canonical, so that '::FFFF:1.2.3.4' and a shorter spelling
    of one address ban the same client."""
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ApiParameterError("ip", f"not an IP address: {str(value)[:60]!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        # A zone (fe80::1%eth0) is local to one host: no client address ever carries it.
        raise ApiParameterError("ip", "give the address without a zone (%…)")
    return str(address)


def flag_battle(store: Store, battle_id: str, reason: str | None) -> None:
    try:
        store.flag_battle(battle_id, reason)
    except BattleNotFound:
        raise ApiParameterError("battle", f"no battle {battle_id[:40]!r}", status=404) from None


def flag_voter(store: Store, voter_id: str, reason: str | None) -> None:
    if not store.flag_voter(voter_id, reason):
        raise ApiParameterError("voter", f"no voter {voter_id[:70]!r}", status=404)


def review_document(store: Store, snap: Snapshot | None) -> dict[str, Any]:
    """What the integrity defences found, for a person to look at: the newest ratings run's
    review (anomalous voters, upsets) and stage counts, voters who leave most battles unvoted,
    and counts of bans, flags and moderation events. Never public: it names voter ids."""
    return {
        "snapshot": None if snap is None else snap.id,
        "ratings": None if snap is None else snap.payload.get("review"),
        "stages": None if snap is None else snap.payload.get("stages"),
        "selective_voters": store.selective_voters(),
        **store.integrity_counts(),
    }


# -- HTTP ------------------------------------------------------------------------------------


class AdminAuth:
    """Every request under /api/v1/admin must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            response = JSONResponse(
                {"error": "admin routes need a valid bearer token", "parameter": None},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if not self.token:
            return False
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
        scheme, _, given = header.partition(b" ")
        # Constant time, whatever the length or content given.
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiParameterError("body", "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiParameterError("body", "the body must be a JSON object")
    return data


def admin_app(arena: App) -> ASGIApp:
    api = FastAPI(title="Arena admin API", docs_url=None, redoc_url=None, openapi_url=None)
    store = arena.store

    @api.exception_handler(ApiParameterError)
    async def parameter_error(_: Request, err: ApiParameterError) -> JSONResponse:
        return JSONResponse({"error": str(err), "parameter": err.parameter}, status_code=err.status)

    def done(**body: Any) -> JSONResponse:
        return JSONResponse({"ok": True, **body}, headers={"Cache-Control": "no-store"})

    async def set_flag(request: Request, what: str, key: str, setter: Any) -> JSONResponse:
        """POST flags (with an optional reason), DELETE clears."""
        reason = None
        if request.method == "POST":
            reason = reason_text((await _body(request)).get("reason")) or DEFAULT_REASON
        await asyncio.to_thread(setter, store, key, reason)
        return done(**{what: key, "flagged": reason})

    @api.api_route("/battles/{battle_id}/flag", methods=["POST", "DELETE"])
    async def battle_flag(battle_id: str, request: Request) -> JSONResponse:
        return await set_flag(request, "battle", battle_id, flag_battle)

    @api.api_route("/voters/{voter_id}/flag", methods=["POST", "DELETE"])
    async def voter_flag(voter_id: str, request: Request) -> JSONResponse:
        return await set_flag(request, "voter", voter_id, flag_voter)

    @api.post("/bans")
    async def ban(request: Request) -> JSONResponse:
        body = await _body(request)
        ip_hash = arena.identity.ip_hash(check_ip(body.get("ip")))
        assert ip_hash is not None
        added = await asyncio.to_thread(store.ban_ip, ip_hash, reason_text(body.get("reason")))
        arena.identity.forget_bans()
        return done(ip_hash=ip_hash, added=added)

    @api.delete("/bans/{ip}")
    async def unban(ip: str) -> JSONResponse:
        ip_hash = arena.identity.ip_hash(check_ip(ip))
        assert ip_hash is not None
        removed = await asyncio.to_thread(store.unban_ip, ip_hash)
        arena.identity.forget_bans()
        return done(ip_hash=ip_hash, removed=removed)

    @api.get("/review")
    async def review() -> JSONResponse:
        body = await asyncio.to_thread(review_document, store, arena.snapshots.latest())
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @api.post("/reload")
    async def reload() -> JSONResponse:
        try:
            config = await asyncio.to_thread(arena.registry.reload)
        except ConfigError as err:
            raise ApiParameterError("registry", str(err), status=409) from None
        from arena.app import announce_reload

        await asyncio.to_thread(announce_reload, store, arena.registry)  # the other processes
        log.info("registry reloaded: %d models", len(config.models))
        return done(models=[m.name for m in config.models])

    @api.post("/ratings", status_code=202)
    async def ratings() -> JSONResponse:
        job = arena.jobs.job("ratings")
        task = asyncio.create_task(arena.jobs.run_once(job, force=True))
        arena.jobs.keep(task)
        return JSONResponse(
            {"ok": True, "status": "started"},
            status_code=202,
            headers={"Cache-Control": "no-store"},
        )

    token = arena.settings.admin_token
    return AdminAuth(api, token.reveal().encode() if token else None)
