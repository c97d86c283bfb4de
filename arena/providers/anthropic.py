"""Anthropic's Messages API, streamed (issue 7): hosted Claude models, extended thinking included.

The same seam as the OpenAI-compatible adapter, on the same HTTP, event-stream and timeout
helpers (`arena.providers.http`). The event shapes follow Anthropic's "Streaming Messages" page
(https://docs.anthropic.com/en/api/messages-streaming): `message_start`, then for each content
block `content_block_start`, `content_block_delta`s and `content_block_stop`, then
`message_delta` (the stop reason and the final usage) and `message_stop`; `ping`s and `error`s
may come at any point.

Thinking arrives in its own blocks (`thinking_delta`), so `think_tags` is accepted for the
seam's sake and ignored: no `<think>` tags to split.

Request parameters (`ChatRequest.params`, from a model's `params` in the registry):

- `max_tokens` (Anthropic requires it; `max_completion_tokens` is read as the same) defaults to
  4096 (`DEFAULT_MAX_TOKENS`).
- `temperature`, `top_p`, `top_k`, `stop_sequences`, `metadata`, `service_tier` are sent as
  they are; OpenAI's `stop` (a string or a list) becomes `stop_sequences`.
- `thinking_budget: N` turns extended thinking on: `thinking: {"type": "enabled",
  "budget_tokens": N}` (0 or absent: off; without it, Anthropic's own `thinking` object is
  sent as it is). Anthropic counts thinking in `max_tokens` and wants
  `max_tokens > budget_tokens`, so a `max_tokens` not above the budget is raised to the budget
  plus `DEFAULT_MAX_TOKENS`, with a warning in the log when the registry set it. With thinking
  on, Anthropic accepts no `temperature` but 1, no `top_k`, and `top_p` only from 0.95: others
  are left out, so a strategy's sampling temperature does not fail the request.
- `reasoning_effort` (the registry's effort knob, OpenAI's name) turns adaptive thinking on at
  that effort: `thinking: {"type": "adaptive"}` and `output_config: {"effort": …}`, the only way
  to think on Claude Opus 4.7 and later, which refuse `"type": "enabled"`. `"none"` sends
  neither (no thinking, Anthropic's default); `"minimal"` becomes `"low"`, Anthropic's lowest;
  `low`, `medium`, `high`, `xhigh` and `max` are sent as they are (Anthropic refuses one its
  model lacks); any other value is refused before sending. Without a registry `max_tokens`,
  adaptive thinking gets 16,000 (`ADAPTIVE_MAX_TOKENS`), since its thinking counts in it. With
  `thinking_budget` as well, the budget's `thinking` block is sent, and the effort still goes in
  `output_config` (it governs the answer's length too).
- OpenAI-only parameters (`seed`, `presence_penalty`, `frequency_penalty`,
  `chat_template_kwargs`, `stream_options`, `n`, `logprobs`, ...) are dropped. Any other
  parameter is sent as it is, and Anthropic's answer to a wrong one reaches the log.

Usage: `prompt_tokens` is the input with cache writes and reads included; `completion_tokens`
is Anthropic's `output_tokens`, thinking included. Anthropic does not count thinking apart, so
`reasoning_tokens` stays None.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from arena.config import Endpoint, Secret, ThinkTags, Timeouts
from arena.errors import EndpointError
from arena.providers.base import ChatRequest, Chunk, Usage
from arena.providers.http import TokenClock, cut_off, decode, open_stream, said

log = logging.getLogger(__name__)

API_VERSION = "2023-06-01"


def auth_headers(key: Secret | None) -> dict[str, str]:
    """The Messages API's credential and version headers: for requests and health checks."""
    headers = {"anthropic-version": API_VERSION}
    if key is not None:
        headers["x-api-key"] = key.reveal()
    return headers


DEFAULT_MAX_TOKENS = 4096
# Without a registry max_tokens, adaptive thinking gets more: its thinking counts in max_tokens,
# and at high effort 4096 could end the answer before it began.
ADAPTIVE_MAX_TOKENS = 16000
FINISH_REASON_WIDTH = 32  # the column's width

# Sent as they are; with thinking on, some are filtered (`_sampling`).
_PASSED = ("temperature", "top_p", "top_k", "stop_sequences", "metadata", "service_tier")
# Set by the adapter itself, or OpenAI's and local servers' own: never sent.
_DROPPED = frozenset(
    {
        "model",
        "messages",
        "system",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "thinking_budget",
        "thinking",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "reasoning_effort",  # becomes adaptive thinking (`_thinking`)
        "output_config",  # merged with the effort
        "chat_template_kwargs",
        "stream_options",
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "response_format",
        "user",
    }
)
# OpenAI's effort levels as Anthropic's (its nearest where it lacks one); "none" means no
# thinking at all. https://platform.claude.com/docs/en/build-with-claude/adaptive-thinking
_EFFORTS = {
    "minimal": "low",
    **{level: level for level in ("low", "medium", "high", "xhigh", "max")},
}

# Anthropic's stop reasons that mean what OpenAI's "stop" and "length" mean; others (refusal,
# pause_turn, tool_use, ...) are kept as Anthropic says them.
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _invalid(detail: str) -> EndpointError:
    return EndpointError("The model's settings are invalid.", detail)


def _int(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _invalid(f"{name} must be a whole number, not {value!r}")
    return int(value)


def _sampling(params: dict[str, Any], thinking: bool) -> dict[str, Any]:
    """temperature, top_p, top_k and the others sent as they are, as thinking allows them."""
    out = {name: params[name] for name in _PASSED if params.get(name) is not None}
    stop = params.get("stop")
    if stop and "stop_sequences" not in out:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if thinking:
        if out.get("temperature") not in (None, 1, 1.0):
            del out["temperature"]
        out.pop("top_k", None)
        top_p = out.get("top_p")
        if isinstance(top_p, int | float) and not 0.95 <= top_p <= 1:
            del out["top_p"]
    return out


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The Messages API body for `request`: system messages hoisted, params mapped."""
    params = dict(request.params)
    system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
    messages = [
        {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
    ]
    budget = _int(params, "thinking_budget") or 0
    if budget < 0:
        raise _invalid(f"thinking_budget must not be negative, not {budget}")
    asked = _int(params, "max_tokens")
    if asked is None:
        asked = _int(params, "max_completion_tokens")
    thinking, output = _thinking(params, budget)
    max_tokens = asked if asked is not None else DEFAULT_MAX_TOKENS
    if asked is None and thinking == {"type": "adaptive"}:
        max_tokens = ADAPTIVE_MAX_TOKENS  # room for the thinking as well as the answer
    if budget and max_tokens <= budget:
        max_tokens = budget + DEFAULT_MAX_TOKENS
        if asked is not None:
            log.warning(
                "model %s: max_tokens %s is not above thinking_budget %s; sending max_tokens %s",
                model,
                asked,
                budget,
                max_tokens,
            )
    body: dict[str, Any] = {
        **{k: v for k, v in params.items() if k not in _DROPPED and k not in _PASSED},
        "model": model,
        "max_tokens": max_tokens,
        "messages": messages,
        "stream": True,
    }
    if thinking is not None:
        body["thinking"] = thinking
    if output:
        body["output_config"] = output
    thinks = thinking is not None and not (
        isinstance(thinking, dict) and thinking.get("type") == "disabled"
    )
    body.update(_sampling(params, thinks))
    if system:
        body["system"] = system
    return body


def _thinking(params: dict[str, Any], budget: int) -> tuple[Any, dict[str, Any]]:
    """The `thinking` block and `output_config` for the budget, the effort or Anthropic's own
    `thinking` object, in that order of precedence for the block."""
    effort = params.get("reasoning_effort")
    if effort is not None and effort != "none" and effort not in _EFFORTS:
        levels = ", ".join(["none", *_EFFORTS])
        raise _invalid(f"reasoning_effort must be one of {levels}, not {effort!r}")
    given = params.get("output_config") or {}
    if not isinstance(given, dict):
        raise _invalid(f"output_config must be an object, not {given!r}")
    output = dict(given)
    thinking = params.get("thinking")
    if effort is not None and effort != "none":
        output["effort"] = _EFFORTS[effort]
        if thinking is None:
            thinking = {"type": "adaptive"}
    if budget:
        thinking = {"type": "enabled", "budget_tokens": budget}
    return thinking, output


def _count(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    return int(value) if isinstance(value, int | float) else 0


class _Answer:
    """What one stream has said so far: its usage and stop reason, and whether it ended."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.stopped = False

    def note_usage(self, raw: Any) -> None:
        # message_delta's counts are cumulative: the latest of each replaces the earlier.
        if isinstance(raw, dict):
            self.usage.update({k: v for k, v in raw.items() if v is not None})

    def total(self) -> Usage:
        u = self.usage
        prompt = sum(
            _count(u, k)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return Usage(prompt_tokens=prompt, completion_tokens=_count(u, "output_tokens"))

    def parse(self, data: Any) -> list[Chunk]:
        """Turn one decoded event into chunks; the last ones come with `message_stop`."""
        if not isinstance(data, dict):
            raise EndpointError("The model server sent a malformed answer.")
        kind = data.get("type")
        if kind == "error":
            # e.g. {"type": "error", "error": {"type": "overloaded_error", "message": "…"}}
            error = data.get("error")
            detail = said(error)
            if isinstance(error, dict) and isinstance(error.get("type"), str):
                detail = f"{error['type']}: {detail}"
            raise EndpointError("The model server reported an error while answering.", detail)
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.note_usage(message.get("usage"))
        elif kind in ("content_block_start", "content_block_delta"):
            return _block_chunks(data)
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
            self.note_usage(data.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
            if self.stop_reason is None:
                return []
            finish = _STOP_REASONS.get(self.stop_reason, self.stop_reason)
            return [
                Chunk(finish_reason=finish[:FINISH_REASON_WIDTH]),
                Chunk(usage=self.total()),
            ]
        # ping, content_block_stop, and event types added later: nothing to show.
        return []


def _block_chunks(data: dict[str, Any]) -> list[Chunk]:
    """Text and thinking from a content block's start or delta. Redacted thinking (encrypted),
    signatures, tool input and citations show nothing."""
    part = data.get("delta") if data.get("type") == "content_block_delta" else None
    if part is None:
        part = data.get("content_block")
    if not isinstance(part, dict):
        return []
    kind = part.get("type")
    if kind in ("text", "text_delta") and isinstance(part.get("text"), str) and part["text"]:
        return [Chunk(content=part["text"])]
    if kind in ("thinking", "thinking_delta"):
        thinking = part.get("thinking")
        if isinstance(thinking, str) and thinking:
            return [Chunk(reasoning=thinking)]
    return []


class AnthropicProvider:
    """One endpoint of one Claude model (`base_url` like https://api.anthropic.com/v1), on a
    shared `httpx.AsyncClient`."""

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
        self.think_tags = think_tags  # unused: thinking comes in blocks of its own

    def _headers(self) -> dict[str, str]:
        return {
            "accept": "text/event-stream",
            "content-type": "application/json",
            **auth_headers(self.endpoint.api_key),
        }

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        clock = TokenClock(self.timeouts)
        try:
            body = request_body(self.endpoint.model, request)
        except EndpointError as err:
            log.warning("model %s: %s (%s)", self.endpoint.model, err, err.detail)
            raise
        url = f"{self.endpoint.base_url}/messages"
        async with open_stream(
            self.client, self.endpoint, clock, url, body, self._headers()
        ) as response:
            async for chunk in self._chunks(response, clock):
                yield chunk

    @staticmethod
    async def _chunks(response: httpx.Response, clock: TokenClock) -> AsyncIterator[Chunk]:
        answer = _Answer()
        async for data in clock.events(response):
            for chunk in answer.parse(decode(data)):
                clock.saw(chunk)
                yield chunk
            if answer.stopped:
                break
        if answer.stop_reason is None or not answer.stopped:
            missing = "a stop_reason" if answer.stop_reason is None else "message_stop"
            raise cut_off(clock.got_token, f"the stream ended without {missing}")
