"""OpenAI-compatible chat completions (vLLM, SGLang, TGI, the demo server, hosted APIs).

Streams server-sent events and reads reasoning from any of the places servers put it:
`delta.reasoning` (vLLM ≥ 0.10), `delta.reasoning_content` (SGLang, DeepSeek), or
`<think>` tags inside the content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from arena.config import Endpoint, ThinkTags, Timeouts
from arena.errors import (
    ConnectError,
    EndpointError,
    FirstTokenTimeout,
    StallTimeout,
    TotalTimeout,
)
from arena.providers.base import ChatRequest, Chunk, Usage
from arena.providers.think import ThinkSplitter

log = logging.getLogger(__name__)


def _status_message(status: int) -> str:
    if status in (401, 403):
        return "The model endpoint refused our credentials."
    if status == 404:
        return "The model is not available at its endpoint."
    if status == 429:
        return "The model is busy right now (rate limited)."
    if status >= 500:
        return f"The model server failed (HTTP {status})."
    return f"The model server rejected the request (HTTP {status})."


DETAIL_LIMIT = 2000  # characters of a server's own error text kept for the operator


def _said(error: Any) -> str:
    """A server's error text, from the shapes servers use, cut to DETAIL_LIMIT."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error.get("error") or error
    if not isinstance(error, str):
        error = json.dumps(error, ensure_ascii=False, default=str)
    return error[:DETAIL_LIMIT]


def _body_text(body: bytes) -> str:
    """An HTTP error body as the server's words: its JSON error message, else the text."""
    text = body[: DETAIL_LIMIT * 2].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:DETAIL_LIMIT]
    if isinstance(data, dict) and ("error" in data or "detail" in data or "message" in data):
        return _said(data.get("error") or data.get("detail") or data.get("message"))
    return text[:DETAIL_LIMIT]


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        reasoning_tokens=int(reasoning) if reasoning is not None else None,
    )


def parse_event(data: Any, splitter: ThinkSplitter | None) -> list[Chunk]:
    """Turn one decoded `data:` payload into chunks."""
    if not isinstance(data, dict):
        raise EndpointError("The model server sent a malformed answer.")
    if "error" in data:  # transformers serve, vLLM: {"error": "…"} or {"error": {"message": …}}
        raise EndpointError(
            "The model server reported an error while answering.", _said(data["error"])
        )
    out: list[Chunk] = []
    choices = data.get("choices") or []
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta") or choice.get("message") or {}
        reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
        if reasoning:
            if splitter is not None:
                splitter.disable_retract()
            out.append(Chunk(reasoning=reasoning))
        content = delta.get("content") or ""
        if content:
            out.extend(splitter.feed(content) if splitter else [Chunk(content=content)])
        finish = choice.get("finish_reason")
        if finish:
            if splitter is not None:
                out.extend(splitter.flush())
            out.append(Chunk(finish_reason=str(finish)[:32]))  # the column's width
    usage = _usage(data.get("usage"))
    if usage is not None:
        out.append(Chunk(usage=usage))
    return out


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
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


class OpenAIProvider:
    """One endpoint of one model, on a shared `httpx.AsyncClient`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint: Endpoint,
        timeouts: Timeouts,
        *,
        think_tags: ThinkTags = "auto",
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.timeouts = timeouts
        self.think_tags = think_tags

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.endpoint.api_key is not None:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key.reveal()}"
        return headers

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return {
            "model": self.endpoint.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **request.params,
        }

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        t = self.timeouts
        started = time.monotonic()
        deadline = started + t.total
        # Read timeouts are ours (first token, gap, total); httpx bounds connect and write.
        timeout = httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.connect)
        http_request = self.client.build_request(
            "POST",
            f"{self.endpoint.base_url}/chat/completions",
            json=self._body(request),
            headers=self._headers(),
            timeout=timeout,
        )
        splitter = None
        if self.think_tags != "off":
            splitter = ThinkSplitter(opened=self.think_tags == "opened")
        name = self.endpoint.model
        try:
            response = await self._within(
                self.client.send(http_request, stream=True),
                started + t.first_token,
                deadline,
                False,
            )
        except httpx.ConnectError:
            log.warning("model %s: cannot connect to %s", name, self.endpoint.base_url)
            raise ConnectError("The model server could not be reached.") from None
        except httpx.TimeoutException:
            log.warning("model %s: connect timeout to %s", name, self.endpoint.base_url)
            raise ConnectError("The model server did not accept the connection in time.") from None
        except httpx.HTTPError as err:
            log.warning("model %s: %s from %s", name, type(err).__name__, self.endpoint.base_url)
            raise EndpointError("The connection to the model server broke.") from None
        try:
            if response.status_code >= 400:
                said = _body_text(await self._error_body(response))
                log.warning(
                    "model %s: HTTP %s from %s: %s",
                    name,
                    response.status_code,
                    self.endpoint.base_url,
                    said.replace("\n", " ")[:500],
                )
                raise EndpointError(_status_message(response.status_code), said or None)
            async for chunk in self._chunks(response, splitter, started, deadline):
                yield chunk
        except httpx.HTTPError as err:
            log.warning("model %s: %s from %s", name, type(err).__name__, self.endpoint.base_url)
            raise EndpointError("The connection to the model server broke.") from None
        except EndpointError as err:
            if err.detail:  # the server's own words, for the operator (not already logged)
                log.warning("model %s: %s (%s)", name, err, err.detail.replace("\n", " ")[:500])
            raise
        finally:
            await response.aclose()

    @staticmethod
    async def _error_body(response: httpx.Response) -> bytes:
        """Up to twice DETAIL_LIMIT bytes of an error response's body (never the whole of a
        huge one)."""
        body = b""
        async for part in response.aiter_bytes():
            body += part
            if len(body) >= DETAIL_LIMIT * 2:
                break
        return body

    @staticmethod
    async def _within(
        awaitable: Any, token_deadline: float, deadline: float, got_token: bool
    ) -> Any:
        """Await until the next token is due or the whole answer is, whichever is sooner."""
        now = time.monotonic()
        wait, left = token_deadline - now, deadline - now
        try:
            return await asyncio.wait_for(awaitable, timeout=max(0.0, min(wait, left)))
        except TimeoutError:
            if left <= wait:
                raise TotalTimeout("The model took too long to finish its answer.") from None
            if got_token:
                raise StallTimeout("The model stopped sending its answer.") from None
            raise FirstTokenTimeout("The model took too long to start answering.") from None

    async def _chunks(
        self,
        response: httpx.Response,
        splitter: ThinkSplitter | None,
        started: float,
        deadline: float,
    ) -> AsyncIterator[Chunk]:
        t = self.timeouts
        events = _sse_data(response).__aiter__()
        got_token = False
        finished = False
        # Timed from the last token, not the last event: keep-alives and empty deltas
        # do not count as progress.
        token_deadline = started + t.first_token
        while True:
            try:
                data = await self._within(events.__anext__(), token_deadline, deadline, got_token)
            except StopAsyncIteration:
                break
            if data.strip() == "[DONE]":
                # The end of the stream, not of the answer: only a finish_reason says the answer
                # is whole. llama-cpp-python's server sends [DONE] mid-answer when another
                # request interrupts it (issue 7).
                break
            try:
                payload = json.loads(data)
            except json.JSONDecodeError:
                raise EndpointError("The model server sent a malformed answer.") from None
            for chunk in parse_event(payload, splitter):
                if chunk.content or chunk.reasoning:
                    got_token = True
                    token_deadline = time.monotonic() + t.between_tokens
                if chunk.finish_reason:
                    finished = True
                yield chunk
        if splitter is not None:
            for chunk in splitter.flush():
                yield chunk
        if not finished:
            why = "the stream ended without a finish_reason"
            if got_token:
                raise EndpointError("The model's answer was cut off.", why)
            raise EndpointError("The model server closed the stream without an answer.", why)
