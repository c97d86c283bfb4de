"""The optional moderation hook: every user turn is checked before either model sees it.

The endpoint speaks the OpenAI moderation API (`POST /v1/moderations` with `{"input": text}`,
answering `{"results": [{"flagged": bool, "categories": {name: bool}, ...}]}`), which OpenAI,
several open guard-model servers and Arena's demo server implement. Whether a failed check lets
the turn through (`open`) or refuses it (`closed`) is the operator's choice (issue 8, §5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx

from arena.config import ModerationConfig


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()
    error: str | None = None  # the check itself failed; `flagged` then follows `on_error`
    scores: dict[str, float] = field(default_factory=dict)


async def moderate(http: httpx.AsyncClient, config: ModerationConfig, text: str) -> Verdict | None:
    """Ask the endpoint about one text; None when the hook is off."""
    if not config.url:
        return None
    body: dict[str, object] = {"input": text}
    if config.model:
        body["model"] = config.model
    headers = {}
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if key:
        headers["authorization"] = f"Bearer {key}"
    try:
        response = await http.post(config.url, json=body, headers=headers, timeout=config.timeout)
        response.raise_for_status()
        result = response.json()["results"][0]
        flagged = result["flagged"]
        if not isinstance(flagged, bool):
            raise TypeError("'flagged' is not a boolean")
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
        reason = f"moderation endpoint failed: {type(err).__name__}"
        if isinstance(err, httpx.HTTPStatusError):
            reason += f" {err.response.status_code}"
        return Verdict(flagged=config.on_error == "closed", error=reason)
    categories = result.get("categories") or {}
    scores = result.get("category_scores") or {}
    return Verdict(
        flagged=flagged,
        categories=tuple(sorted(k for k, v in categories.items() if v is True)),
        scores={k: float(v) for k, v in scores.items() if isinstance(v, int | float)},
    )
