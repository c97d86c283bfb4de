"""OpenAI-compatible chat completions (vLLM, SGLang, TGI, the demo server, hosted APIs).

Streams server-sent events and reads reasoning from any of the places servers put it:
`delta.reasoning` (vLLM ≥ 0.10), `delta.reasoning_content` (SGLang, DeepSeek), or
`<think>` tags inside the content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from arena.config import Endpoint, ThinkTags, Timeouts
from arena.errors import EndpointError
from arena.providers.base import ChatRequest, Chunk, Usage
from arena.providers.http import (
    DETAIL_LIMIT,
    TokenClock,
    bearer,
    cut_off,
    decode,
    open_stream,
    said,
)
from arena.providers.think import ThinkSplitter

__all__ = ["DETAIL_LIMIT", "OpenAIProvider", "parse_event"]


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if reasoning is None:  # SGLang puts it at the top of usage (tests/wire/README.md)
        reasoning = raw.get("reasoning_tokens")
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
            "The model server reported an error while answering.", said(data["error"])
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
        return {"Accept": "text/event-stream", **bearer(self.endpoint.api_key)}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return {
            "model": self.endpoint.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **request.params,
        }

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        clock = TokenClock(self.timeouts)
        splitter = None
        if self.think_tags != "off":
            splitter = ThinkSplitter(opened=self.think_tags == "opened")
        url = f"{self.endpoint.base_url}/chat/completions"
        body, headers = self._body(request), self._headers()
        async with open_stream(self.client, self.endpoint, clock, url, body, headers) as response:
            async for chunk in self._chunks(response, splitter, clock):
                yield chunk

    @staticmethod
    async def _chunks(
        response: httpx.Response, splitter: ThinkSplitter | None, clock: TokenClock
    ) -> AsyncIterator[Chunk]:
        finished = False
        async for data in clock.events(response):
            if data.strip() == "[DONE]":
                # The end of the stream, not of the answer: only a finish_reason says the answer
                # is whole. llama-cpp-python's server sends [DONE] mid-answer when another
                # request interrupts it (issue 7).
                break
            for chunk in parse_event(decode(data), splitter):
                clock.saw(chunk)
                if chunk.finish_reason:
                    finished = True
                yield chunk
        if splitter is not None:
            for chunk in splitter.flush():
                yield chunk
        if not finished:
            raise cut_off(clock.got_token, "the stream ended without a finish_reason")
