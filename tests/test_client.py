"""The OpenAI-compatible client, over real HTTP against the demo model server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arena.config import Endpoint, Secret, Timeouts
from arena.demo_models import create_demo_app
from arena.errors import (
    ConnectError,
    EndpointError,
    FirstTokenTimeout,
    ProviderError,
    StallTimeout,
    TotalTimeout,
)
from arena.providers.base import ChatMessage, ChatRequest, Chunk
from arena.providers.openai import OpenAIProvider, parse_event
from arena.providers.think import ThinkSplitter
from tests.servers import free_port, serve

FAST = Timeouts(connect=2, first_token=5, between_tokens=5, total=20)


def request(text: str = "Why is the sky blue?", **params: object) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), params=params)


async def collect(provider: OpenAIProvider, req: ChatRequest) -> dict[str, object]:
    content = reasoning = ""
    finish = None
    usage = None
    async for chunk in provider.stream_chat(req):
        if chunk.retract_content:
            reasoning, content = reasoning + content, ""
        content += chunk.content
        reasoning += chunk.reasoning
        finish = chunk.finish_reason or finish
        usage = chunk.usage or usage
    return {"content": content, "reasoning": reasoning, "finish": finish, "usage": usage}


def provider(url: str, model: str, timeouts: Timeouts = FAST, **kw: object) -> OpenAIProvider:
    client = httpx.AsyncClient()
    return OpenAIProvider(client, Endpoint(base_url=url + "/v1", model=model), timeouts, **kw)


# -- parsing single events -------------------------------------------------------------


def finish(reason: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def delta(**fields: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_field_variants(field: str) -> None:
    assert parse_event(delta(**{field: "hmm"}), ThinkSplitter()) == [Chunk(reasoning="hmm")]


def test_usage_and_finish() -> None:
    event = {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 7,
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    chunks = parse_event(event, None)
    assert chunks[0].finish_reason == "length"
    assert chunks[1].usage is not None and chunks[1].usage.reasoning_tokens == 4


def test_error_event_raises() -> None:
    with pytest.raises(EndpointError):
        parse_event({"error": {"message": "boom"}}, None)


# -- against the demo server -------------------------------------------------------------


async def test_plain_stream_with_usage(demo_url: str) -> None:
    out = await collect(provider(demo_url, "verbose"), request())
    assert out["content"].startswith("## Overview")  # type: ignore[union-attr]
    assert out["reasoning"] == ""
    assert out["finish"] == "stop"
    assert out["usage"].completion_tokens > 10  # type: ignore[union-attr]


async def test_reasoning_field_stream(demo_url: str) -> None:
    out = await collect(provider(demo_url, "reasoner"), request())
    assert out["reasoning"].startswith("The user asks")  # type: ignore[union-attr]
    assert out["content"].startswith("After thinking it over")  # type: ignore[union-attr]
    assert out["usage"].reasoning_tokens > 0  # type: ignore[union-attr]


async def test_think_tags_without_opening_tag(demo_url: str) -> None:
    out = await collect(provider(demo_url, "thinker"), request())
    assert out["reasoning"].startswith("The user asks")  # type: ignore[union-attr]
    assert "</think>" not in out["content"]  # type: ignore[operator]
    assert out["content"].startswith("Conclusion:")  # type: ignore[union-attr]


async def test_think_tags_opened_never_shows_reasoning_as_content(demo_url: str) -> None:
    contents: list[str] = []
    async for chunk in provider(demo_url, "thinker", think_tags="opened").stream_chat(request()):
        assert not chunk.retract_content
        contents.append(chunk.content)
    assert "".join(contents).startswith("Conclusion:")


async def test_think_tags_off_keeps_raw_content(demo_url: str) -> None:
    out = await collect(provider(demo_url, "thinker", think_tags="off"), request())
    assert "</think>" in out["content"]  # type: ignore[operator]


async def test_max_tokens_gives_length(demo_url: str) -> None:
    out = await collect(provider(demo_url, "verbose"), request(max_tokens=5))
    assert out["finish"] == "length"
    assert out["usage"].completion_tokens == 5  # type: ignore[union-attr]


def no_leak(err: ProviderError, url: str) -> None:
    text = str(err)
    host = url.split("//", 1)[1]
    assert host not in text and "http" not in text and "Traceback" not in text


async def test_unknown_model_is_short_error(demo_url: str) -> None:
    with pytest.raises(EndpointError) as info:
        await collect(provider(demo_url, "no-such-model"), request())
    assert "not available" in str(info.value)
    no_leak(info.value, demo_url)


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError) as info:
        await collect(provider(url, "terse"), request())
    no_leak(info.value, url)


async def test_first_token_timeout() -> None:
    with serve(create_demo_app(latency=3, tokens_per_second=0), "/health") as url:
        t = Timeouts(connect=2, first_token=0.3, between_tokens=5, total=20)
        with pytest.raises(FirstTokenTimeout) as info:
            await collect(provider(url, "terse", t), request())
        no_leak(info.value, url)


async def test_stall_between_tokens() -> None:
    with serve(create_demo_app(latency=0, tokens_per_second=2), "/health") as url:
        t = Timeouts(connect=2, first_token=5, between_tokens=0.2, total=20)
        with pytest.raises(StallTimeout):
            await collect(provider(url, "verbose", t), request())


async def test_total_timeout() -> None:
    with serve(create_demo_app(latency=0, tokens_per_second=20), "/health") as url:
        t = Timeouts(connect=2, first_token=5, between_tokens=5, total=0.5)
        with pytest.raises(TotalTimeout):
            await collect(provider(url, "verbose", t), request())


# -- a hand-written endpoint for what the demo server never does -------------------------


@pytest.fixture(scope="module")
def odd_server() -> Iterator[str]:
    seen: list[str] = []

    async def chat(request: Request) -> Response:
        body = await request.json()
        seen.append(request.headers.get("authorization", ""))
        mode = body["messages"][-1]["content"]
        if mode == "auth":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        if mode == "garbage":

            async def garbage() -> AsyncIterator[str]:
                yield "data: {not json\n\n"

            return StreamingResponse(garbage(), media_type="text/event-stream")
        if mode == "sglang":

            async def sglang() -> AsyncIterator[str]:
                for piece in ({"reasoning_content": "r1 "}, {"reasoning_content": "r2"}):
                    yield "data: " + json.dumps(delta(**piece)) + "\n\n"
                yield "data: " + json.dumps(delta(content="final")) + "\n\n"
                yield "data: " + json.dumps(finish("stop")) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(sglang(), media_type="text/event-stream")
        if mode == "interrupted":
            # llama-cpp-python's server when another request interrupts this one
            # (interrupt_requests on): [DONE] mid-answer, no finish_reason (issue 7).

            async def interrupted() -> AsyncIterator[str]:
                for word in ("The user said hi, ", "so I should"):
                    yield "data: " + json.dumps(delta(content=word)) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(interrupted(), media_type="text/event-stream")
        if mode == "error-event":
            # transformers serve: an error event mid-stream, then the stream ends.

            async def error_event() -> AsyncIterator[str]:
                yield "data: " + json.dumps(delta(content="Hel")) + "\n\n"
                said = "max_new_tokens must be greater than 0, but is -3 for secret-model-7b"
                yield "data: " + json.dumps({"error": said}) + "\n\n"

            return StreamingResponse(error_event(), media_type="text/event-stream")
        if mode == "http-400":
            said = {"error": {"message": "This model's maximum context length is 4096 tokens"}}
            return JSONResponse(said, status_code=400)
        if mode == "cutoff":

            async def cutoff() -> AsyncIterator[str]:
                for word in ("The ", "answer ", "is"):
                    yield "data: " + json.dumps(delta(content=word)) + "\n\n"

            return StreamingResponse(cutoff(), media_type="text/event-stream")
        if mode == "keepalive":

            async def keepalive() -> AsyncIterator[str]:
                for _ in range(50):
                    yield "data: " + json.dumps(delta(role="assistant")) + "\n\n"
                    await asyncio.sleep(0.1)

            return StreamingResponse(keepalive(), media_type="text/event-stream")
        if mode == "error-stall":
            # An error status whose body never finishes (review of issue 7).

            async def stall() -> AsyncIterator[str]:
                yield '{"error": "the GPU'
                await asyncio.sleep(3600)

            return StreamingResponse(stall(), status_code=500, headers={"content-length": "1000"})
        if mode == "empty":

            async def empty() -> AsyncIterator[str]:
                yield ": keep-alive\n\n"

            return StreamingResponse(empty(), media_type="text/event-stream")
        return JSONResponse({"seen": seen})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.state.seen = seen
    with serve(app, "/v1/chat/completions") as url:
        yield url


async def test_api_key_sent_as_bearer_and_never_in_errors(odd_server: str) -> None:
    secret = "sk-test-very-secret"
    endpoint = Endpoint(odd_server + "/v1", "m", api_key_env="X_API_KEY", api_key=Secret(secret))
    p = OpenAIProvider(httpx.AsyncClient(), endpoint, FAST)
    with pytest.raises(EndpointError) as info:
        await collect(p, request("auth"))
    assert secret not in str(info.value) and secret not in repr(endpoint)
    assert "credentials" in str(info.value)
    check = httpx.post(odd_server + "/v1/chat/completions", json={"messages": [{"content": ""}]})
    assert f"Bearer {secret}" in check.json()["seen"]


async def test_malformed_stream(odd_server: str) -> None:
    with pytest.raises(EndpointError, match="malformed"):
        await collect(provider(odd_server, "m"), request("garbage"))


async def test_sglang_reasoning_content(odd_server: str) -> None:
    out = await collect(provider(odd_server, "m"), request("sglang"))
    assert (out["reasoning"], out["content"]) == ("r1 r2", "final")


async def test_cut_off_stream_is_an_error(odd_server: str) -> None:
    # Tokens, then the connection closes with no finish_reason and no [DONE].
    with pytest.raises(EndpointError, match="cut off"):
        await collect(provider(odd_server, "m"), request("cutoff"))


async def test_done_without_finish_reason_is_a_cut_off_answer(odd_server: str) -> None:
    with pytest.raises(EndpointError, match="cut off") as info:
        await collect(provider(odd_server, "m"), request("interrupted"))
    assert info.value.detail and "finish_reason" in info.value.detail


async def test_server_error_text_is_kept_for_the_operator_only(
    odd_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(EndpointError) as info:
        await collect(provider(odd_server, "m"), request("error-event"))
    assert str(info.value) == "The model server reported an error while answering."
    assert "secret-model-7b" not in str(info.value)  # the voter's message names nothing
    assert info.value.detail and "max_new_tokens must be greater than 0" in info.value.detail
    with pytest.raises(EndpointError) as info:
        await collect(provider(odd_server, "m"), request("http-400"))
    assert str(info.value) == "The model server rejected the request (HTTP 400)."
    assert info.value.detail == "This model's maximum context length is 4096 tokens"
    logged = caplog.text
    assert "max_new_tokens must be greater than 0" in logged and "4096 tokens" in logged


async def test_empty_events_do_not_count_as_tokens(odd_server: str) -> None:
    t = Timeouts(connect=2, first_token=0.5, between_tokens=5, total=20)
    with pytest.raises(FirstTokenTimeout):
        await collect(provider(odd_server, "m", t), request("keepalive"))


def test_finish_reason_fits_its_column() -> None:
    event = {"choices": [{"index": 0, "delta": {}, "finish_reason": "x" * 40}]}
    assert parse_event(event, None)[0].finish_reason == "x" * 32


async def test_stream_without_answer(odd_server: str) -> None:
    with pytest.raises(EndpointError, match="without an answer"):
        await collect(provider(odd_server, "m"), request("empty"))


async def test_two_streams_run_concurrently(slow_demo_url: str) -> None:
    # Both streams share one client; neither waits for the other to finish.
    p = provider(slow_demo_url, "terse")
    order: list[str] = []

    async def run(name: str, model: str) -> None:
        async for chunk in OpenAIProvider(
            p.client, Endpoint(slow_demo_url + "/v1", model), FAST
        ).stream_chat(request()):
            if chunk.content:
                order.append(name)

    await asyncio.gather(run("terse", "terse"), run("verbose", "verbose"))
    first_verbose = order.index("verbose")
    last_terse = len(order) - 1 - order[::-1].index("terse")
    assert first_verbose < last_terse


async def test_error_status_with_a_stalled_body_still_ends(odd_server: str) -> None:
    quick = Timeouts(connect=2, first_token=5, between_tokens=0.5, total=5)
    p = OpenAIProvider(httpx.AsyncClient(), Endpoint(odd_server + "/v1", "m"), quick)
    with pytest.raises(EndpointError, match=r"failed \(HTTP 500\)"):
        await asyncio.wait_for(collect(p, request("error-stall")), 10)
