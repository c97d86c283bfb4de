"""The HTTP API. Nothing here may name the models of a battle that has no vote.

`/api/v1` is the export API for researchers and sites (OpenAPI docs at `/api/v1/docs`). It only
reads snapshots the ratings job wrote and votes already cast: nothing is computed on request.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from arena.errors import ApiParameterError
from arena.interchange import write_battles
from arena.leaderboard import (
    OVERALL,
    Snapshot,
    leaderboard_document,
    model_cards,
    public_matrices,
    rated_models,
    rows_csv,
)
from arena.transfer import battle_page, decode_cursor, encode_cursor

router = APIRouter(prefix="/api")
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    app = request.app.state.arena
    votes = await asyncio.to_thread(app.store.count_votes)
    return {"status": "ok", "demo": app.config.demo, "votes": votes}


async def healthz(request: Request) -> Response:
    """Liveness, and how old the newest snapshot is."""
    app = request.app.state.arena
    snap = await asyncio.to_thread(app.snapshots.latest)
    body: dict[str, Any] = {"status": "ok", "snapshot": None}
    if snap is not None:
        age = (datetime.now(UTC) - snap.created_at).total_seconds()
        body["snapshot"] = {"id": snap.id, "created_at": snap.payload["created_at"]}
        body["snapshot_age_seconds"] = round(age, 1)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# -- /api/v1 ---------------------------------------------------------------------------------


def _cached(request: Request, body: bytes, media_type: str, **headers: str) -> Response:
    """ETag from the bytes; a matching If-None-Match gets 304 without the body."""
    tag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    max_age = request.app.state.arena.config.leaderboard.cache_seconds
    common = {"ETag": tag, "Cache-Control": f"public, max-age={max_age}", **headers}
    match = request.headers.get("if-none-match", "")
    # Weak comparison (RFC 9110): a proxy that compressed the body sends W/"…" back.
    offered = [t.strip().removeprefix("W/") for t in match.split(",")]
    if tag in offered or match.strip() == "*":
        return Response(status_code=304, headers=common)
    return Response(body, media_type=media_type, headers=common)


def _arena(request: Request) -> Any:
    return request.app.state.arena


def _snapshot_for(app: Any, category: str, style_control: bool) -> Snapshot:
    if len(category) > 64 or not category.isprintable():
        raise ApiParameterError("category", "category must be a printable name of 64 characters")
    snap = app.snapshots.latest(category, style_control)
    if snap is not None:
        return snap
    known = app.snapshots.categories()
    if not known:
        raise ApiParameterError(
            "category",
            "no leaderboard yet: no snapshot has been written (are there votes yet?)",
            status=404,
        )
    raise ApiParameterError(
        "category", f"unknown category {category!r}; known: {', '.join(known)}", status=404
    )


def v1() -> FastAPI:
    api = FastAPI(
        title="Arena export API",
        version="1",
        description=(
            "Ratings from the latest leaderboard snapshot, the snapshot history, public model "
            "cards and anonymised votes. Nothing here is computed on request: the ratings job "
            "writes snapshots (docs/leaderboard.md)."
        ),
        docs_url="/docs",
        redoc_url=None,
    )

    @api.exception_handler(ApiParameterError)
    async def parameter_error(_: Request, err: ApiParameterError) -> JSONResponse:
        return JSONResponse({"error": str(err), "parameter": err.parameter}, status_code=err.status)

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("query", "path")]
        name = loc[0] if loc else "request"
        return JSONResponse(
            {"error": f"{name}: {first.get('msg', 'invalid value')}", "parameter": name},
            status_code=400,
        )

    @api.get("/leaderboard", summary="The latest leaderboard snapshot")
    async def leaderboard(
        request: Request,
        category: str = OVERALL,
        style_control: bool = False,
        format: Literal["json", "csv"] = "json",
    ) -> Response:
        app = _arena(request)

        def build() -> tuple[bytes, str]:
            snap = _snapshot_for(app, category, style_control)
            # A snapshot never changes and the registry is read once at start, so the bytes
            # for a snapshot and format can be kept.
            key = ("leaderboard", snap.id, format)
            cached = app.snapshots.responses.get(key)
            if cached is None:
                doc = leaderboard_document(app.engine, app.config, snap)
                if format == "csv":
                    cached = (rows_csv(doc["rows"]), "text/csv; charset=utf-8")
                else:
                    cached = (json.dumps(doc).encode("utf-8"), "application/json")
                app.snapshots.responses.put(key, cached)
            return cached

        body, media = await asyncio.to_thread(build)
        return _cached(request, body, media)

    @api.get(
        "/leaderboard/snapshots",
        summary="Snapshot history, newest first (paged)",
    )
    async def snapshots(
        request: Request,
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None,
    ) -> Response:
        app = _arena(request)
        before = decode_cursor(cursor) if cursor else None
        items = await asyncio.to_thread(app.snapshots.page, limit + 1, before)
        more = len(items) > limit
        items = items[:limit]
        headers = {}
        if more and items:
            headers["Link"] = _next(request, limit=limit, cursor=encode_cursor(items[-1]["id"]))
        body = json.dumps({"snapshots": items}).encode("utf-8")
        return _cached(request, body, "application/json", **headers)

    @api.get(
        "/leaderboard/snapshots/{snapshot_id}",
        summary="One snapshot, with its matrices",
    )
    async def snapshot(request: Request, snapshot_id: str) -> Response:
        app = _arena(request)
        if not (snapshot_id.isascii() and snapshot_id.isdigit()) or int(snapshot_id) > MAX_ID:
            raise ApiParameterError("snapshot_id", f"not a snapshot id: {snapshot_id[:40]!r}")
        snap = await asyncio.to_thread(app.snapshots.get, int(snapshot_id))
        if snap is None:
            raise ApiParameterError("snapshot_id", f"no snapshot {snapshot_id}", status=404)

        def build() -> bytes:
            key = ("snapshot", snap.id)  # a snapshot never changes: build its bytes once
            body = app.snapshots.responses.get(key)
            if body is None:
                doc = leaderboard_document(app.engine, app.config, snap)
                doc["matrices"] = public_matrices(snap, [r["model"] for r in doc["rows"]])
                body = json.dumps(doc).encode("utf-8")
                app.snapshots.responses.put(key, body)
            return body  # type: ignore[no-any-return]

        body = await asyncio.to_thread(build)
        return _cached(request, body, "application/json")

    @api.get(
        "/models",
        summary="Public model cards (unreleased models are absent)",
    )
    async def models(request: Request) -> Response:
        app = _arena(request)
        rated = await asyncio.to_thread(rated_models, app.engine)
        cards = model_cards(app.config, rated)
        body = json.dumps(
            {
                "models": [
                    {
                        "name": c.name,
                        "organization": c.organization,
                        "license": c.license,
                        "description": c.description,
                        "rating_only": c.rating_only,
                        "retired": c.retired,
                    }
                    for c in cards.values()
                ]
            }
        ).encode("utf-8")
        return _cached(request, body, "application/json")

    @api.get(
        "/battles",
        summary="Anonymised votes for research, in vote order (keyset paged)",
    )
    async def battles(
        request: Request,
        since: str | None = None,
        limit: int | None = Query(None, ge=1),
        cursor: str | None = None,
        format: Literal["jsonl", "csv"] = "jsonl",
    ) -> Response:
        app = _arena(request)
        export = app.config.export
        size = limit or export.page_size
        if size > export.max_page_size:
            raise ApiParameterError("limit", f"limit must be at most {export.max_page_size}")
        after = decode_cursor(cursor) if cursor else None
        since_at = _parse_since(since) if since else None

        def build() -> tuple[bytes, int | None]:
            rows, next_id = battle_page(
                app.engine,
                after=after,
                limit=size,
                since=since_at,
                include_content=export.include_content,
                salt=app.export_salt,
            )
            out = io.StringIO()
            write_battles(rows, out, format)
            return out.getvalue().encode("utf-8"), next_id

        body, next_id = await asyncio.to_thread(build)
        headers = {}
        if next_id is not None:
            headers["Link"] = _next(request, limit=size, cursor=encode_cursor(next_id))
        media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
        return _cached(request, body, media, **headers)

    # HEAD answers like GET without the body (health checks and caches use it); kept out of
    # the OpenAPI document, which would list every operation twice.
    for route in list(api.routes):
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            api.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)
    return api


def _next(request: Request, **params: Any) -> str:
    """The Link header for the next page: this request's URL with the new cursor."""
    # Relative to this origin (RFC 8288): never built from the Host header, which a client
    # controls, on a response that shared caches keep.
    url = request.url.include_query_params(**params)
    return f'<{url.path}?{url.query}>; rel="next"'


def _parse_since(text: str) -> datetime:
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ApiParameterError(
            "since", f"since must be an ISO 8601 time or unix seconds, got {text!r}"
        ) from None
    # In UTC: SQLite compares the stored UTC text, so an offset must not survive to the query.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
