"""The demo server's `math` model and the reasoning controls of its reasoning models, over real
HTTP: sampling that varies with seed and temperature, slips, reasoning_effort and
thinking_token_budget."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from arena.config import Endpoint, Timeouts
from arena.providers.base import ChatMessage, ChatRequest
from arena.providers.openai import OpenAIProvider

PROMPT = "What is 17 * 23?"
FAST = Timeouts(connect=2, first_token=5, between_tokens=5, total=20)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def complete(
    http: httpx.AsyncClient, url: str, prompt: str = PROMPT, model: str = "math", **params: Any
) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **params}
    response = await http.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def content(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"]["content"])


def reasoning(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"].get("reasoning") or "")


def boxed(text: str) -> str:
    found = re.findall(r"\\boxed\{([^{}]*)\}", text)
    assert found, text
    return str(found[-1])


async def test_worked_solution_in_steps_with_the_boxed_answer(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    text = content(await complete(http, demo_url, temperature=0))
    steps = text.split("\n\n")
    assert len(steps) >= 4
    assert steps[-1].endswith(":\n$$\\boxed{391}$$")
    assert "17 × 20 = 340" in text


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        ("What is 100 - 37?", "63"),
        ("Compute 2 + 3 * 4", "14"),
        ("What is 15 / 4?", "3.75"),
        ("What is 1 / 3?", "1/3"),
        ("What is 6 x 7?", "42"),
    ],
)
async def test_arithmetic_is_computed(
    demo_url: str, http: httpx.AsyncClient, prompt: str, answer: str
) -> None:
    assert boxed(content(await complete(http, demo_url, prompt, temperature=0))) == answer


async def test_other_prompts_get_an_answer_fixed_by_their_text(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    sky = boxed(content(await complete(http, demo_url, "Why is the sky blue?", temperature=0)))
    spaced = boxed(content(await complete(http, demo_url, "Why is  the sky blue?", temperature=0)))
    sea = boxed(content(await complete(http, demo_url, "Why is the sea salty?", temperature=0)))
    assert sky.isdigit() and sea.isdigit() and sky != sea
    assert spaced == sky
    # Sampled (temperature 1 when the request names none), it is right most of the time.
    answers = [
        boxed(content(await complete(http, demo_url, "Why is the sky blue?", seed=s)))
        for s in range(40)
    ]
    assert answers.count(sky) > len(answers) / 2


async def test_temperature_zero_is_deterministic(demo_url: str, http: httpx.AsyncClient) -> None:
    replies = [content(await complete(http, demo_url, temperature=0, seed=s)) for s in range(4)]
    replies.append(content(await complete(http, demo_url, temperature=0)))
    assert len(set(replies)) == 1


async def test_a_seed_reproduces_its_sample(demo_url: str, http: httpx.AsyncClient) -> None:
    for seed in range(6):
        first = await complete(http, demo_url, temperature=1.0, seed=seed)
        again = await complete(http, demo_url, temperature=1.0, seed=seed)
        assert content(first) == content(again)
        assert reasoning(first) == reasoning(again)


async def test_samples_vary_with_the_seed_and_without_one(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    seeded = {content(await complete(http, demo_url, temperature=0.7, seed=s)) for s in range(8)}
    assert len(seeded) > 1
    unseeded = {content(await complete(http, demo_url, temperature=0.7)) for _ in range(8)}
    assert len(unseeded) > 1
    # The same seed at another temperature is another sample.
    hot = [content(await complete(http, demo_url, temperature=1.3, seed=s)) for s in range(8)]
    warm = [content(await complete(http, demo_url, temperature=0.7, seed=s)) for s in range(8)]
    assert hot != warm


async def test_wrong_answers_appear_and_grow_with_temperature(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    async def wrong(temperature: float, n: int) -> int:
        answers = [
            boxed(content(await complete(http, demo_url, temperature=temperature, seed=s)))
            for s in range(n)
        ]
        return sum(a != "391" for a in answers)

    at_one = await wrong(1.0, 16)
    assert 0 < at_one < 16 / 2  # some wrong, most right: a majority vote still works
    assert await wrong(0.3, 40) < await wrong(1.5, 40)


async def test_a_slip_is_an_arithmetic_error_in_one_step(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    for seed in range(32):
        text = content(await complete(http, demo_url, temperature=1.0, seed=seed))
        if boxed(text) != "391":
            break
    else:
        pytest.fail("no slip in 32 samples at temperature 1")
    ops = {"+": int.__add__, "×": int.__mul__}
    equations = re.findall(r"(\d+) ([+×]) (\d+) = (-?\d+)", text)
    wrong = [e for e in equations if ops[e[1]](int(e[0]), int(e[2])) != int(e[3])]
    assert len(wrong) == 1


@pytest.mark.parametrize("model", ["math", "reasoner", "thinker"])
async def test_reasoning_effort_sets_the_reasoning_length(
    demo_url: str, http: httpx.AsyncClient, model: str
) -> None:
    async def tokens(**params: Any) -> int:
        reply = await complete(http, demo_url, model=model, temperature=0, **params)
        return int(reply["usage"]["completion_tokens_details"]["reasoning_tokens"])

    none, low, medium, high = [
        await tokens(reasoning_effort=e) for e in ("none", "low", "medium", "high")
    ]
    assert none == 0 < low < medium < high
    assert await tokens() == medium  # medium when the request names none


async def test_reasoning_effort_leaves_the_answer_alone(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    replies = [
        await complete(http, demo_url, model=m, reasoning_effort=e, temperature=0)
        for m in ("math", "reasoner")
        for e in ("low", "high")
    ]
    assert content(replies[0]) == content(replies[1])
    assert content(replies[2]) == content(replies[3])


async def test_thinking_budget_caps_the_reasoning(demo_url: str, http: httpx.AsyncClient) -> None:
    full = await complete(http, demo_url, reasoning_effort="high", temperature=0)
    capped = await complete(
        http, demo_url, reasoning_effort="high", temperature=0, thinking_token_budget=6
    )
    assert full["usage"]["completion_tokens_details"]["reasoning_tokens"] > 6
    assert capped["usage"]["completion_tokens_details"]["reasoning_tokens"] == 6
    assert len(reasoning(capped).split()) == 6
    assert reasoning(full).startswith(reasoning(capped))
    # The answer still comes whole after the reasoning stops.
    assert content(capped) == content(full)
    assert capped["choices"][0]["finish_reason"] == "stop"
    none = await complete(http, demo_url, model="reasoner", thinking_token_budget=0)
    assert reasoning(none) == ""
    assert none["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_usage_counts_reasoning_tokens(demo_url: str, http: httpx.AsyncClient) -> None:
    reply = await complete(http, demo_url, seed=1)
    usage = reply["usage"]
    words = len(reasoning(reply).split())
    assert usage["completion_tokens_details"]["reasoning_tokens"] == words > 0
    assert usage["completion_tokens"] == words + len(content(reply).split())


async def test_the_streamed_sample_is_the_same(demo_url: str, http: httpx.AsyncClient) -> None:
    """Through the arena's own client, streamed: the same answer, reasoning and usage."""
    params: dict[str, Any] = {"temperature": 1.0, "seed": 5, "reasoning_effort": "high"}
    plain = await complete(http, demo_url, **params)
    provider = OpenAIProvider(http, Endpoint(demo_url + "/v1", "math"), FAST)
    text = thought = ""
    usage = None
    request = ChatRequest(messages=(ChatMessage("user", PROMPT),), params=params)
    async for chunk in provider.stream_chat(request):
        text += chunk.content
        thought += chunk.reasoning
        usage = chunk.usage or usage
    assert text == content(plain)
    assert thought == reasoning(plain)
    assert usage is not None
    assert usage.reasoning_tokens == plain["usage"]["completion_tokens_details"]["reasoning_tokens"]


@pytest.mark.parametrize(
    "params",
    [
        {"reasoning_effort": "extreme"},
        {"seed": "7"},
        {"temperature": -1},
        {"temperature": "hot"},
        {"thinking_token_budget": -1},
        {"thinking_token_budget": 1.5},
    ],
)
async def test_bad_sampling_parameters_are_refused(
    demo_url: str, http: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    body = {"model": "math", "messages": [{"role": "user", "content": PROMPT}], **params}
    response = await http.post(f"{demo_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


async def test_models_are_listed(demo_url: str, http: httpx.AsyncClient) -> None:
    listed = {m["id"] for m in (await http.get(f"{demo_url}/v1/models")).json()["data"]}
    assert {"terse", "reasoner", "math", "reward", "reward-binary", "prm"} <= listed
