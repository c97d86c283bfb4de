"""The HTTP API. Nothing here may name the models of a battle that has no vote."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(prefix="/api")


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    app = request.app.state.arena
    votes = await asyncio.to_thread(app.store.count_votes)
    return {"status": "ok", "demo": app.config.demo, "votes": votes}
