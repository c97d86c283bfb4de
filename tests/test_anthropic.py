"""The Anthropic Messages adapter, over real HTTP against a local server replaying event streams.

The server below is hand-written: its streams follow Anthropic's documented wire format (they
are not recordings of the real API). Each shape names the page it follows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arena.config import Endpoint, Secret, Timeouts
from arena.errors import (
    ConnectError,
    EndpointError,
    FirstTokenTimeout,
    ProviderError,
    StallTimeout,
    TotalTimeout,
)
from arena.providers.anthropic import AnthropicProvider, request_body
from arena.providers.base import ChatMessage, ChatRequest, Chunk, Usage
from tests.servers import free_port, serve

FAST = Timeouts(connect=2, first_token=5, between_tokens=5, total=20)
MODEL = "claude-secret-7"  # error bodies name it; a voter's message never does
KEY = "sk-ant-test-very-secret"

# -- the documented wire format ----------------------------------------------------------
# Event flow, text_delta, thinking_delta, signature_delta, ping, message_delta usage and the
# error event: https://docs.anthropic.com/en/api/messages-streaming ("Streaming Messages").
# Thinking blocks in a stream: https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking
# HTTP error bodies: https://docs.anthropic.com/en/api/errors


def sse(kind: str, **fields: Any) -> str:
    """One server-sent event as Anthropic writes it: the SSE event name repeats the type."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n"


def message_start(input_tokens: int = 25, **usage: int) -> str:
    return sse(
        "message_start",
        message={
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": MODEL,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1, **usage},
        },
    )


def block_start(index: int, block: dict[str, Any]) -> str:
    return sse("content_block_start", index=index, content_block=block)


def text_start(index: int) -> str:
    return block_start(index, {"type": "text", "text": ""})


def thinking_start(index: int) -> str:
    return block_start(index, {"type": "thinking", "thinking": "", "signature": ""})


def delta(index: int, **part: Any) -> str:
    return sse("content_block_delta", index=index, delta=part)


def text(index: int, words: str) -> str:
    return delta(index, type="text_delta", text=words)


def thinking(index: int, words: str) -> str:
    return delta(index, type="thinking_delta", thinking=words)


def signature(index: int) -> str:
    return delta(index, type="signature_delta", signature="EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrk")


def block_stop(index: int) -> str:
    return sse("content_block_stop", index=index)


def message_delta(stop_reason: str, output_tokens: int, **usage: int) -> str:
    return sse(
        "message_delta",
        delta={"stop_reason": stop_reason, "stop_sequence": None},
        usage={"output_tokens": output_tokens, **usage},
    )


PING = sse("ping")
STOP = sse("message_stop")


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


STREAMS: dict[str, list[str]] = {
    # A thinking block (deltas, then its signature), then a text block.
    "thinking": [
        message_start(25, cache_creation_input_tokens=0, cache_read_input_tokens=100),
        thinking_start(0),
        thinking(0, "Euclid: 1071 = 2 × 462 + 147"),
        thinking(0, "; 462 = 3 × 147 + 21; 147 = 7 × 21."),
        signature(0),
        block_stop(0),
        text_start(1),
        text(1, "The GCD is "),
        text(1, "**21**."),
        block_stop(1),
        message_delta("end_turn", 120),
        STOP,
    ],
    "plain": [
        message_start(12),
        text_start(0),
        PING,
        text(0, "Hello"),
        PING,
        text(0, "!"),
        block_stop(0),
        message_delta("end_turn", 15),
        STOP,
    ],
    "max_tokens": [
        message_start(8),
        text_start(0),
        text(0, "Once upon a"),
        block_stop(0),
        message_delta("max_tokens", 3),
        STOP,
    ],
    "refusal": [
        message_start(8),
        text_start(0),
        text(0, "I can't help with that."),
        block_stop(0),
        message_delta("refusal", 6),
        STOP,
    ],
    "stop_sequence": [
        message_start(8),
        text_start(0),
        text(0, "one two"),
        block_stop(0),
        message_delta("stop_sequence", 2),
        STOP,
    ],
    # Newer servers repeat the input counts in message_delta's (cumulative) usage.
    "cumulative": [
        message_start(10, cache_creation_input_tokens=5, cache_read_input_tokens=0),
        text_start(0),
        text(0, "ok"),
        block_stop(0),
        message_delta(
            "end_turn",
            4,
            input_tokens=10,
            cache_creation_input_tokens=5,
            cache_read_input_tokens=30,
        ),
        STOP,
    ],
    "whitespace_thinking": [
        message_start(9),
        thinking_start(0),
        thinking(0, "\n\n"),
        signature(0),
        block_stop(0),
        text_start(1),
        text(1, "Paris."),
        block_stop(1),
        message_delta("end_turn", 7),
        STOP,
    ],
    # Redacted thinking carries only encrypted data: nothing to show.
    "redacted": [
        message_start(9),
        block_start(0, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDF"}),
        block_stop(0),
        text_start(1),
        text(1, "Done."),
        block_stop(1),
        message_delta("end_turn", 40),
        STOP,
    ],
    "error_event": [
        message_start(9),
        text_start(0),
        text(0, "Hel"),
        sse("error", error={"type": "overloaded_error", "message": f"Overloaded: {MODEL}"}),
    ],
    # Text, then the connection closes: no message_delta, no message_stop.
    "cutoff": [message_start(9), text_start(0), text(0, "The answer "), text(0, "is")],
    # The stop reason came, the end of the message did not.
    "no_message_stop": [
        message_start(9),
        text_start(0),
        text(0, "Whole?"),
        block_stop(0),
        message_delta("end_turn", 3),
    ],
    "nothing": [message_start(9), PING],
    "garbage": ["event: message_start\ndata: {not json\n\n"],
}
HTTP_ERRORS = {
    "http-400": (400, "invalid_request_error", f"max_tokens: 100000 > 64000 for {MODEL}"),
    "http-401": (401, "authentication_error", "invalid x-api-key"),
    "http-529": (529, "overloaded_error", f"{MODEL} is overloaded"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    seen: list[dict[str, Any]] = []

    async def messages(request: Request) -> Response:
        body = await request.json()
        seen.append({"body": body, "headers": dict(request.headers)})
        mode = body["messages"][-1]["content"]
        if mode in HTTP_ERRORS:
            status, kind, message = HTTP_ERRORS[mode]
            return JSONResponse(error_body(kind, message), status_code=status)
        if mode == "pings":  # keep-alives only, for longer than the first-token timeout

            async def pings() -> AsyncIterator[str]:
                yield message_start(9)
                for _ in range(50):
                    yield PING
                    await asyncio.sleep(0.1)

            return StreamingResponse(pings(), media_type="text/event-stream")
        if mode == "stall":  # thinking, then silence but for pings

            async def stall() -> AsyncIterator[str]:
                for event in (message_start(9), thinking_start(0), thinking(0, "Hmm")):
                    yield event
                for _ in range(50):
                    yield PING
                    await asyncio.sleep(0.1)

            return StreamingResponse(stall(), media_type="text/event-stream")
        if mode == "slow":  # tokens keep coming, the whole answer takes too long

            async def slow() -> AsyncIterator[str]:
                yield message_start(9) + text_start(0)
                for _ in range(50):
                    yield text(0, "word ")
                    await asyncio.sleep(0.1)

            return StreamingResponse(slow(), media_type="text/event-stream")
        events = STREAMS[mode]

        async def replay() -> AsyncIterator[str]:
            for event in events:
                yield event

        return StreamingResponse(replay(), media_type="text/event-stream")

    async def requests(request: Request) -> Response:
        return JSONResponse(seen)

    app = Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/seen", requests),
        ]
    )
    with serve(app, "/seen") as url:
        yield url


def last_request(url: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = httpx.get(url + "/seen").json()
    return seen[-1]


def provider(
    url: str, timeouts: Timeouts = FAST, key: str | None = KEY, model: str = MODEL
) -> AnthropicProvider:
    endpoint = Endpoint(
        url + "/v1",
        model,
        api_key_env="ANTHROPIC_API_KEY" if key else None,
        api_key=Secret(key) if key else None,
    )
    return AnthropicProvider(httpx.AsyncClient(), endpoint, timeouts)


def ask(mode: str, *history: ChatMessage, **params: Any) -> ChatRequest:
    return ChatRequest(messages=(*history, ChatMessage("user", mode)), params=params)


async def chunks(p: AnthropicProvider, req: ChatRequest) -> list[Chunk]:
    return [chunk async for chunk in p.stream_chat(req)]


async def collect(p: AnthropicProvider, req: ChatRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"content": "", "reasoning": "", "finish": None, "usage": None}
    for chunk in await chunks(p, req):
        out["content"] += chunk.content
        out["reasoning"] += chunk.reasoning
        out["finish"] = chunk.finish_reason or out["finish"]
        out["usage"] = chunk.usage or out["usage"]
    return out


# -- answers ---------------------------------------------------------------------------


async def test_thinking_then_text(server: str) -> None:
    got = await chunks(provider(server), ask("thinking", thinking_budget=2048))
    assert got == [
        Chunk(reasoning="Euclid: 1071 = 2 × 462 + 147"),
        Chunk(reasoning="; 462 = 3 × 147 + 21; 147 = 7 × 21."),
        Chunk(content="The GCD is "),
        Chunk(content="**21**."),
        Chunk(finish_reason="stop"),
        # Cache reads count as prompt; output_tokens include the thinking.
        Chunk(usage=Usage(prompt_tokens=125, completion_tokens=120)),
    ]
    usage = got[-1].usage
    assert usage is not None
    assert usage.reasoning_tokens is None and usage.reasoning_source is None


async def test_plain_text_with_pings(server: str) -> None:
    out = await collect(provider(server), ask("plain"))
    assert out == {
        "content": "Hello!",
        "reasoning": "",
        "finish": "stop",
        "usage": Usage(prompt_tokens=12, completion_tokens=15),
    }


@pytest.mark.parametrize(
    ("mode", "finish", "content"),
    [
        ("max_tokens", "length", "Once upon a"),
        ("stop_sequence", "stop", "one two"),
        ("refusal", "refusal", "I can't help with that."),
    ],
)
async def test_stop_reasons(server: str, mode: str, finish: str, content: str) -> None:
    out = await collect(provider(server), ask(mode))
    assert (out["finish"], out["content"]) == (finish, content)


async def test_message_delta_usage_is_cumulative(server: str) -> None:
    out = await collect(provider(server), ask("cumulative"))
    assert out["usage"] == Usage(prompt_tokens=10 + 5 + 30, completion_tokens=4)


async def test_whitespace_thinking_is_kept_as_sent(server: str) -> None:
    # The page decides what whitespace reasoning shows (nothing); the adapter keeps it.
    out = await collect(provider(server), ask("whitespace_thinking", thinking_budget=1024))
    assert (out["reasoning"], out["content"], out["finish"]) == ("\n\n", "Paris.", "stop")


async def test_redacted_thinking_shows_nothing(server: str) -> None:
    got = await chunks(provider(server), ask("redacted"))
    assert [c.content for c in got if c.content or c.reasoning] == ["Done."]
    assert got[-2:] == [
        Chunk(finish_reason="stop"),
        Chunk(usage=Usage(prompt_tokens=9, completion_tokens=40)),
    ]


# -- what the server receives ----------------------------------------------------------


async def test_request_headers_and_body(server: str) -> None:
    history = (
        ChatMessage("system", "Be brief."),
        ChatMessage("system", "Answer in English."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello."),
    )
    params = {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "max_completion_tokens": 300,
        "stop": "###",
        # OpenAI's and local servers' own: dropped.
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "reasoning_effort": "none",  # no thinking: Anthropic's default, so nothing is sent
        "chat_template_kwargs": {"enable_thinking": True},
        "stream_options": {"include_usage": True},
    }
    await collect(provider(server), ask("plain", *history, **params))
    seen = last_request(server)
    assert seen["body"] == {
        "model": MODEL,
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "plain"},
        ],
        "max_tokens": 300,
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["###"],
    }
    headers = seen["headers"]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "text/event-stream"
    assert "authorization" not in headers


async def test_max_tokens_defaults_and_no_key(server: str) -> None:
    await collect(provider(server, key=None), ask("plain"))
    seen = last_request(server)
    assert seen["body"] == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "plain"}],
        "max_tokens": 4096,
        "stream": True,
    }
    assert "x-api-key" not in seen["headers"]


async def test_thinking_budget_mapping(server: str) -> None:
    # With thinking on, Anthropic takes no temperature but 1, no top_k, top_p only >= 0.95.
    params = {"thinking_budget": 2048, "temperature": 0.7, "top_k": 5, "top_p": 0.5}
    await collect(provider(server), ask("thinking", **params))
    body = last_request(server)["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 4096
    assert not {"temperature", "top_k", "top_p", "thinking_budget"} & body.keys()
    params = {"thinking_budget": 2048, "temperature": 1, "top_p": 0.95}
    await collect(provider(server), ask("thinking", **params))
    body = last_request(server)["body"]
    assert (body["temperature"], body["top_p"]) == (1, 0.95)


async def test_max_tokens_not_above_the_budget_is_raised(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await collect(provider(server), ask("thinking", thinking_budget=8000, max_tokens=1000))
    body = last_request(server)["body"]
    assert body["max_tokens"] == 8000 + 4096
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert "max_tokens 1000 is not above thinking_budget 8000" in caplog.text
    # Left alone when valid, however close.
    await collect(provider(server), ask("thinking", thinking_budget=8000, max_tokens=8001))
    assert last_request(server)["body"]["max_tokens"] == 8001


def test_budget_absent_or_zero_means_no_thinking() -> None:
    body = request_body("m", ask("x", thinking_budget=0, temperature=0.3))
    assert "thinking" not in body and body["temperature"] == 0.3


def test_anthropic_thinking_object_is_sent_as_it_is() -> None:
    body = request_body("m", ask("x", thinking={"type": "adaptive"}, temperature=0.3))
    assert body["thinking"] == {"type": "adaptive"} and "temperature" not in body
    body = request_body("m", ask("x", thinking={"type": "disabled"}, temperature=0.3))
    assert body["thinking"] == {"type": "disabled"} and body["temperature"] == 0.3
    # thinking_budget wins over it.
    body = request_body("m", ask("x", thinking={"type": "adaptive"}, thinking_budget=1024))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_reasoning_effort_is_adaptive_thinking(server: str) -> None:
    # Claude Opus 4.7 and later think only this way; they refuse "type": "enabled".
    params = {"reasoning_effort": "high", "temperature": 0.7, "max_tokens": 16000}
    await collect(provider(server), ask("thinking", **params))
    body = last_request(server)["body"]
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "high"}
    assert "reasoning_effort" not in body and "temperature" not in body  # thinking: 1 only
    assert body["max_tokens"] == 16000
    # OpenAI's "minimal" is Anthropic's lowest level; "xhigh" and "max" pass as they are.
    for asked, sent in (("minimal", "low"), ("xhigh", "xhigh"), ("max", "max")):
        body = request_body("m", ask("x", reasoning_effort=asked))
        assert body["output_config"] == {"effort": sent}
        assert body["thinking"] == {"type": "adaptive"}


def test_effort_beside_a_budget_or_anthropic_thinking_object() -> None:
    # A budget keeps its block (older models); the effort still goes in output_config.
    body = request_body("m", ask("x", reasoning_effort="low", thinking_budget=2048))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["output_config"] == {"effort": "low"}
    body = request_body("m", ask("x", reasoning_effort="medium", thinking={"type": "disabled"}))
    assert body["thinking"] == {"type": "disabled"} and body["output_config"]["effort"] == "medium"
    body = request_body("m", ask("x", reasoning_effort="none", temperature=0.3))
    assert "thinking" not in body and "output_config" not in body and body["temperature"] == 0.3
    for wrong in (3, "", "High", "extreme"):
        with pytest.raises(EndpointError) as info:
            request_body("m", ask("x", reasoning_effort=wrong))
        assert info.value.detail and "reasoning_effort must be one of" in info.value.detail
    with pytest.raises(EndpointError) as info:
        request_body("m", ask("x", reasoning_effort="low", output_config="fast"))
    assert info.value.detail and "output_config must be an object" in info.value.detail


def test_adaptive_thinking_gets_room_for_its_thinking() -> None:
    # Its thinking counts in max_tokens: without one from the registry, 16,000 rather than 4096.
    assert request_body("m", ask("x", reasoning_effort="high"))["max_tokens"] == 16000
    given = request_body("m", ask("x", reasoning_effort="high", max_tokens=2000))
    assert given["max_tokens"] == 2000
    assert request_body("m", ask("x", reasoning_effort="none"))["max_tokens"] == 4096


async def test_invalid_thinking_budget_is_not_sent(server: str) -> None:
    before = len(httpx.get(server + "/seen").json())
    with pytest.raises(EndpointError) as info:
        await collect(provider(server), ask("plain", thinking_budget="lots"))
    assert str(info.value) == "The model's settings are invalid."
    assert info.value.detail and "thinking_budget" in info.value.detail
    assert len(httpx.get(server + "/seen").json()) == before


# -- failures --------------------------------------------------------------------------


def names_nothing(err: ProviderError, url: str) -> None:
    text = str(err)
    assert MODEL not in text and KEY not in text
    assert url.split("//", 1)[1] not in text and "http" not in text and "Traceback" not in text


async def test_error_event_mid_stream(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(EndpointError) as info:
        await collect(provider(server), ask("error_event"))
    assert str(info.value) == "The model server reported an error while answering."
    assert info.value.detail == f"overloaded_error: Overloaded: {MODEL}"
    names_nothing(info.value, server)
    assert f"Overloaded: {MODEL}" in caplog.text


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("http-400", "The model server rejected the request (HTTP 400)."),
        ("http-401", "The model endpoint refused our credentials."),
        ("http-529", "The model server failed (HTTP 529)."),
    ],
)
async def test_http_errors(
    server: str, mode: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(EndpointError) as info:
        await collect(provider(server), ask(mode))
    assert str(info.value) == message
    assert info.value.detail == HTTP_ERRORS[mode][2]  # the error's message, from its JSON body
    names_nothing(info.value, server)
    assert HTTP_ERRORS[mode][2] in caplog.text


async def test_stream_cut_off_before_message_stop(server: str) -> None:
    with pytest.raises(EndpointError) as info:
        await collect(provider(server), ask("cutoff"))
    assert str(info.value) == "The model's answer was cut off."
    assert info.value.detail == "the stream ended without a stop_reason"
    with pytest.raises(EndpointError) as info:
        await collect(provider(server), ask("no_message_stop"))
    assert str(info.value) == "The model's answer was cut off."
    assert info.value.detail == "the stream ended without message_stop"


async def test_stream_without_an_answer(server: str) -> None:
    with pytest.raises(EndpointError, match="closed the stream without an answer"):
        await collect(provider(server), ask("nothing"))


async def test_malformed_event(server: str) -> None:
    with pytest.raises(EndpointError, match="malformed"):
        await collect(provider(server), ask("garbage"))


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError) as info:
        await collect(provider(url), ask("plain"))
    names_nothing(info.value, url)


async def test_pings_are_not_tokens(server: str) -> None:
    t = Timeouts(connect=2, first_token=0.5, between_tokens=5, total=20)
    with pytest.raises(FirstTokenTimeout):
        await collect(provider(server, t), ask("pings"))


async def test_thinking_counts_as_a_token_then_stalls(server: str) -> None:
    t = Timeouts(connect=2, first_token=5, between_tokens=0.5, total=20)
    with pytest.raises(StallTimeout):
        await collect(provider(server, t), ask("stall"))


async def test_total_timeout(server: str) -> None:
    t = Timeouts(connect=2, first_token=5, between_tokens=5, total=0.5)
    with pytest.raises(TotalTimeout):
        await collect(provider(server, t), ask("slow"))
