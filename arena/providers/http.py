"""What every streaming HTTP adapter shares (OpenAI-compatible, Anthropic): opening the stream,
turning HTTP failures into `ProviderError`s, reading server-sent events, and the three answer
timeouts (first token, between tokens, whole answer).

A `ProviderError`'s message is for the voter and names nothing; what the server itself said goes
to its `detail` and to the log, for the operator: an error body can name the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx

from arena.config import Endpoint, Secret, Timeouts
from arena.errors import (
    ConnectError,
    EndpointError,
    FirstTokenTimeout,
    ServerFailed,
    StallTimeout,
    StreamBroken,
    TotalTimeout,
)
from arena.providers.base import Chunk

log = logging.getLogger(__name__)

T = TypeVar("T")

DETAIL_LIMIT = 2000  # characters of a server's own error text kept for the operator


def bearer(key: Secret | None) -> dict[str, str]:
    """The credential header of OpenAI-compatible servers (vLLM's `--api-key` too): used by
    requests, reward-model calls and health checks alike."""
    return {} if key is None else {"Authorization": f"Bearer {key.reveal()}"}


def status_message(status: int) -> str:
    """The voter's words for an HTTP error status."""
    if status in (401, 403):
        return "The model endpoint refused our credentials."
    if status == 404:
        return "The model is not available at its endpoint."
    if status == 429:
        return "The model is busy right now (rate limited)."
    if status >= 500:
        return f"The model server failed (HTTP {status})."
    return f"The model server rejected the request (HTTP {status})."


def said(error: Any) -> str:
    """A server's error text, from the shapes servers use, cut to DETAIL_LIMIT."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error.get("error") or error
    if not isinstance(error, str):
        error = json.dumps(error, ensure_ascii=False, default=str)
    return error[:DETAIL_LIMIT]


def body_text(body: bytes) -> str:
    """An HTTP error body as the server's words: its JSON error message, else the text."""
    text = body[: DETAIL_LIMIT * 2].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:DETAIL_LIMIT]
    if isinstance(data, dict) and ("error" in data or "detail" in data or "message" in data):
        return said(data.get("error") or data.get("detail") or data.get("message"))
    return text[:DETAIL_LIMIT]


def decode(data: str) -> Any:
    """One event's `data:` as JSON."""
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise EndpointError("The model server sent a malformed answer.") from None


def cut_off(got_token: bool, why: str) -> EndpointError:
    """The error for a stream that ended before the server said the answer was whole."""
    if got_token:
        return EndpointError("The model's answer was cut off.", why)
    return EndpointError("The model server closed the stream without an answer.", why)


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """Yield the data of each server-sent event (multi-line data joined by newlines)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)


async def error_body(response: httpx.Response) -> bytes:
    """Up to twice DETAIL_LIMIT bytes of an error response's body (never the whole of a huge
    one)."""
    body = b""
    async for part in response.aiter_bytes():
        body += part
        if len(body) >= DETAIL_LIMIT * 2:
            break
    return body


async def within(
    awaitable: Awaitable[T], token_deadline: float, deadline: float, got_token: bool
) -> T:
    """Await until the next token is due or the whole answer is, whichever is sooner."""
    now = time.monotonic()
    wait, left = token_deadline - now, deadline - now
    try:
        # asyncio.timeout, not wait_for: no task and no second timer per streamed event, which
        # was half of what the adapter cost per token (bench.router, issue 7).
        async with asyncio.timeout(max(0.0, min(wait, left))):
            return await awaitable
    except TimeoutError:
        if left <= wait:
            raise TotalTimeout("The model took too long to finish its answer.") from None
        if got_token:
            raise StallTimeout("The model stopped sending its answer.") from None
        raise FirstTokenTimeout("The model took too long to start answering.") from None


class TokenClock:
    """The deadlines of one answer, started when the request is.

    The next token is due `first_token` seconds after the start, then `between_tokens` after
    the last token: timed from the last token, not the last event, so keep-alives, pings and
    empty deltas do not count as progress. The whole answer is due `total` seconds after the
    start.
    """

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.started = time.monotonic()
        self.deadline = self.started + timeouts.total
        self.token_deadline = self.started + timeouts.first_token
        self.got_token = False

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await within the deadlines, raising the timeout error that applies."""
        return await within(awaitable, self.token_deadline, self.deadline, self.got_token)

    async def events(self, response: httpx.Response) -> AsyncIterator[str]:
        """The data of each server-sent event of `response`, each within the deadlines."""
        events = sse_data(response).__aiter__()
        while True:
            try:
                data = await self.wait(events.__anext__())
            except StopAsyncIteration:
                return
            yield data

    def saw(self, chunk: Chunk) -> None:
        """Note a chunk given to the caller: text or reasoning restarts the token clock."""
        if chunk.content or chunk.reasoning:
            self.got_token = True
            self.token_deadline = time.monotonic() + self.timeouts.between_tokens


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    clock: TokenClock,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> AsyncIterator[httpx.Response]:
    """POST `body` to `url` and hold the streamed response open.

    Connection failures, HTTP error statuses and broken connections (while the caller reads
    too) become `ProviderError`s; a server's own words in an `EndpointError.detail` are logged.
    """
    t = clock.timeouts
    # Read timeouts are ours (first token, gap, total); httpx bounds connect and write.
    timeout = httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.connect)
    http_request = client.build_request("POST", url, json=body, headers=headers, timeout=timeout)
    name, where = endpoint.model, endpoint.base_url
    try:
        response = await clock.wait(client.send(http_request, stream=True))
    except httpx.ConnectError:
        log.warning("model %s: cannot connect to %s", name, where)
        raise ConnectError("The model server could not be reached.") from None
    except httpx.TimeoutException:
        log.warning("model %s: connect timeout to %s", name, where)
        raise ConnectError("The model server did not accept the connection in time.") from None
    except httpx.HTTPError as err:
        log.warning("model %s: %s from %s", name, type(err).__name__, where)
        raise StreamBroken("The connection to the model server broke.") from None
    try:
        if response.status_code >= 400:
            # Bounded: a server that sends an error status and then stalls must not hold the
            # battle (review of issue 7); the status alone still fails it.
            try:
                said = await asyncio.wait_for(error_body(response), t.between_tokens)
            except TimeoutError:
                said = b""
            text = body_text(said)
            log.warning(
                "model %s: HTTP %s from %s: %s",
                name,
                response.status_code,
                where,
                text.replace("\n", " ")[:500],
            )
            error = ServerFailed if response.status_code >= 500 else EndpointError
            raise error(status_message(response.status_code), text or None)
        yield response
    except httpx.HTTPError as err:
        log.warning("model %s: %s from %s", name, type(err).__name__, where)
        raise StreamBroken("The connection to the model server broke.") from None
    except EndpointError as err:
        if err.detail and response.status_code < 400:  # an error status is logged above
            log.warning("model %s: %s (%s)", name, err, err.detail.replace("\n", " ")[:500])
        raise
    finally:
        await response.aclose()
