"""The OpenAI-compatible client against the streams each server family really sends (issue 7).

Every file in tests/wire/ is one response body, byte for byte as a server wrote it (or as
close as the source allowed: tests/wire/README.md says, per file, where it comes from, what
was trimmed and which files are reconstructions that follow a server's code rather than
captures). A small Starlette app serves each file over real HTTP, one write per event or in
odd-sized pieces that cut lines and JSON in half, and `OpenAIProvider` reads it.

The expected values below were worked out by hand from the recordings (concatenating the
deltas a reader of that server would concatenate), not by running the client's parser.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from arena.config import Endpoint, ThinkTags, Timeouts
from arena.errors import EndpointError
from arena.providers.base import ChatMessage, ChatRequest, Usage
from arena.providers.openai import OpenAIProvider
from tests.servers import serve

WIRE = Path(__file__).parent / "wire"
TIMEOUTS = Timeouts(connect=2, first_token=5, between_tokens=5, total=20)
REQUEST = ChatRequest(messages=(ChatMessage("user", "hi"),))
PIECE = 79  # bytes per write in "pieces" mode: cuts lines, JSON, and the DeepSeek emoji
MODES = ("events", "pieces")

# The voter's messages (arena/providers/openai.py); the server's own words go to .detail only.
SERVER_ERROR = "The model server reported an error while answering."
CUT_OFF = "The model's answer was cut off."
NO_FINISH = "the stream ended without a finish_reason"


def recording(name: str) -> bytes:
    return (WIRE / f"{name}.sse").read_bytes()


def split_events(raw: bytes) -> list[bytes]:
    """The body cut after each blank line: what a server writes per event."""
    return [part for part in re.split(rb"(?<=\n\n)", raw) if part]


# -- the replay server --------------------------------------------------------------------


@dataclass
class WireServer:
    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def wire_server() -> Iterator[WireServer]:
    """POST /v1/chat/completions for model "<name>@<mode>" streams tests/wire/<name>.sse."""
    bodies: list[dict[str, Any]] = []

    async def chat(request: Request) -> Response:
        body = await request.json()
        bodies.append(body)
        name, _, mode = body["model"].partition("@")
        raw = recording(name)
        if mode == "events":
            pieces = split_events(raw)
        else:
            pieces = [raw[i : i + PIECE] for i in range(0, len(raw), PIECE)]

        async def stream() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece
                await asyncio.sleep(0.001)  # separate writes, not one coalesced body

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),
        ]
    )
    with serve(app, health="/health") as url:
        yield WireServer(url, bodies)


@dataclass
class Replay:
    """What the client made of one recording: the text so far, and the error if one ended it."""

    content: str = ""
    reasoning: str = ""
    finish: str | None = None
    usage: Usage | None = None
    error: EndpointError | None = None
    retracted: bool = False  # content was shown, then taken back as reasoning


async def replay(url: str, name: str, mode: str, think_tags: ThinkTags = "auto") -> Replay:
    out = Replay()
    async with httpx.AsyncClient() as client:
        endpoint = Endpoint(base_url=url + "/v1", model=f"{name}@{mode}")
        provider = OpenAIProvider(client, endpoint, TIMEOUTS, think_tags=think_tags)
        try:
            async for chunk in provider.stream_chat(REQUEST):
                if chunk.retract_content:  # what the page does: the answer so far was reasoning
                    out.reasoning, out.content = out.reasoning + out.content, ""
                    out.retracted = True
                out.content += chunk.content
                out.reasoning += chunk.reasoning
                out.finish = chunk.finish_reason or out.finish
                out.usage = chunk.usage or out.usage
        except EndpointError as err:
            out.error = err
    return out


# -- what each recording must give ----------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    content: str
    reasoning: str
    finish: str | None
    # (prompt_tokens, completion_tokens, reasoning_tokens), or None when the stream has none
    usage: tuple[int, int, int | None] | None
    error: str | None = None  # the voter's message when the stream ends in an error
    detail: str | None = None  # ... and what the operator sees (the server's own words)
    think_tags: ThinkTags = "auto"


TGI_OOM = (
    "Request failed during generation: Server error: CUDA out of memory. Tried to allocate "
    "64.00 MiB. GPU 0 has a total capacity of 23.68 GiB of which 40.12 MiB is free."
)
TRANSFORMERS_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.64 GiB "
    "of which 1.12 GiB is free."
)

EXPECTED: dict[str, Expected] = {
    # vLLM ≥ 0.10: delta.reasoning. This capture is vLLM's own bug (the answer "12" arrives
    # as reasoning), so the voter's content is empty; the usage chunk has empty choices.
    "vllm-reasoning": Expected(
        content="",
        reasoning="12",
        finish="stop",
        usage=(35, 3, None),
    ),
    # Older vLLM: delta.reasoning_content; content begins with the model's "\n\n".
    "vllm-reasoning-content": Expected(
        content="\n\nHello!",
        reasoning="\nAlright.\n",
        finish="stop",
        usage=(9, 7, None),
    ),
    # DeepSeek API: reasoning_content, content null beside it; finish and usage in one chunk,
    # reasoning tokens in completion_tokens_details.
    "deepseek-api-reasoner": Expected(
        content="Hello there! 😊 How can I help you today?",
        reasoning=(
            "Hmm, the user just said \"Hello\". It's a simple greeting but I wonder if there's "
            "more to it.  \n\nI'll avoid assumptions about their gender, location, or intent "
            "since there's zero information. If they're just being polite, they might not "
            "reply further - and that's okay too."
        ),
        finish="stop",
        usage=(6, 212, 198),
    ),
    # TGI: its own field order, role in every delta, the last token's text on the finish chunk.
    "tgi-stream-usage": Expected(
        content="**Deep Learning: An Overview**\n=====================================\n\n",
        reasoning="",
        finish="length",
        usage=(40, 10, None),
    ),
    # TGI serving a DeepSeek-R1 distill whose template already opened <think>: only the
    # closing tag arrives, in the content; a keep-alive comment in between.
    "tgi-think-closing-tag": Expected(
        content="Hello! How can I help?",
        reasoning="Okay, the user says hi. I should greet them back.\n",
        finish="stop",
        usage=(12, 23, None),
    ),
    "tgi-error-event": Expected(
        content="Hello,",
        reasoning="",
        finish=None,
        usage=None,
        error=SERVER_ERROR,
        detail=TGI_OOM,
    ),
    # SGLang: every delta field present, null when unused; matched_stop; a usage chunk with
    # empty choices. (Its reasoning_tokens sit at the top of usage: a test below.)
    "sglang-reasoning-content": Expected(
        content="\n\nHello! How can I help you today?",
        reasoning="Okay, the user is greeting me. I'll respond warmly.\n",
        finish="stop",
        usage=(8, 24, 14),
    ),
    # llama-server with --reasoning-format auto: reasoning_content, timings on every chunk,
    # role chunk with content null, a usage chunk with empty choices and timings.
    "llamacpp-reasoning-content": Expected(
        content="Yes.",
        reasoning=" it handles*   ",
        finish="stop",
        usage=(17, 52, None),
    ),
    # ik_llama.cpp's llama-server with raw think tags (a "\n" before <think>), usage on every
    # chunk; the paste it comes from stops mid-reasoning, so the connection ends there.
    "ik-llamacpp-think-tags-truncated": Expected(
        content="",
        reasoning="Okay, the user just sent a simple",
        finish=None,
        usage=(6, 10, None),
        error=CUT_OFF,
        detail=NO_FINISH,
    ),
    # transformers serve: raw think tags, finish and usage in the last chunk, no [DONE].
    "transformers-serve": Expected(
        content="Hi! How can I help?",
        reasoning="\nOkay, the user said hi.\n",
        finish="stop",
        usage=(9, 20, None),
    ),
    "transformers-serve-error": Expected(
        content="Hello!",
        reasoning="",
        finish=None,
        usage=None,
        error=SERVER_ERROR,
        detail=TRANSFORMERS_OOM,
    ),
    # llama-cpp-python: json.dumps spacing, no usage in streams, finish chunk with delta {}.
    "llama-cpp-python": Expected(
        content="Hello! How can I help you today?",
        reasoning="",
        finish="stop",
        usage=None,
    ),
    # llama-cpp-python interrupted by another request: [DONE] mid-answer, no finish_reason.
    "llama-cpp-python-interrupted": Expected(
        content="The capital of France is",
        reasoning="",
        finish=None,
        usage=None,
        error=CUT_OFF,
        detail=NO_FINISH,
    ),
}


def usage_tuple(usage: Usage | None) -> tuple[int, int, int | None] | None:
    if usage is None:
        return None
    return (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens)


def test_every_recording_is_covered() -> None:
    assert {p.stem for p in WIRE.glob("*.sse")} == set(EXPECTED)
    readme = (WIRE / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert f"{name}.sse" in readme, f"{name}.sse has no entry in tests/wire/README.md"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_replay(wire_server: WireServer, name: str, mode: str) -> None:
    want = EXPECTED[name]
    got = await replay(wire_server.url, name, mode, want.think_tags)
    # Only a lone </think> after untagged content takes content back (TGI's R1 distill).
    assert got.retracted == (name == "tgi-think-closing-tag")
    assert got.content == want.content
    assert got.reasoning == want.reasoning
    assert got.finish == want.finish
    assert usage_tuple(got.usage) == want.usage
    if want.error is None:
        assert got.error is None, f"unexpected {got.error!r} (detail {got.error.detail!r})"
        return
    assert got.error is not None, "the stream should have ended in an EndpointError"
    assert str(got.error) == want.error
    assert got.error.detail == want.detail
    if want.detail is not None and want.detail != NO_FINISH:
        assert want.detail not in str(got.error)  # the server's words: the operator's only


# -- the same recordings under the other think_tags settings --------------------------------


async def test_tgi_closing_tag_with_opened_template(wire_server: WireServer) -> None:
    # An operator who knows the template opens <think> gets the same split, with no
    # content shown first and taken back.
    got = await replay(wire_server.url, "tgi-think-closing-tag", "events", think_tags="opened")
    assert not got.retracted
    assert (got.reasoning, got.content) == (
        "Okay, the user says hi. I should greet them back.\n",
        "Hello! How can I help?",
    )


async def test_tgi_closing_tag_with_think_tags_off(wire_server: WireServer) -> None:
    got = await replay(wire_server.url, "tgi-think-closing-tag", "events", think_tags="off")
    assert got.reasoning == ""
    assert got.content == (
        "Okay, the user says hi. I should greet them back.\n</think>\n\nHello! How can I help?"
    )


async def test_transformers_think_tags_off(wire_server: WireServer) -> None:
    got = await replay(wire_server.url, "transformers-serve", "events", think_tags="off")
    assert got.reasoning == ""
    assert got.content == "<think>\nOkay, the user said hi.\n</think>\n\nHi! How can I help?"


# -- what the recordings taught the client -------------------------------------------------


async def test_sglang_reasoning_tokens(wire_server: WireServer) -> None:
    # SGLang reports them as usage.reasoning_tokens (UsageInfo in
    # sglang/srt/entrypoints/openai/protocol.py), not under completion_tokens_details.
    got = await replay(wire_server.url, "sglang-reasoning-content", "events")
    assert got.usage is not None and got.usage.reasoning_tokens == 14


# -- what the client asks for ----------------------------------------------------------------


async def test_client_asks_for_the_usage_chunk(wire_server: WireServer) -> None:
    # vLLM, SGLang, TGI and llama-server send usage only when asked: the recordings' usage
    # chunks assume this request.
    await replay(wire_server.url, "vllm-reasoning", "events")
    body = wire_server.bodies[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
