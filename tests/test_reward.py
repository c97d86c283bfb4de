"""The reward-model client (arena/providers/reward.py), over real HTTP: against the demo server's
reward models (`reward`, `reward-binary`, `prm`) and a small server of our own for the shapes and
failures the demo server does not send."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from arena.config import RewardApi, RewardEndpoint, Secret
from arena.errors import ConnectError, EndpointError, ProviderError, TotalTimeout
from arena.providers.base import ChatMessage
from arena.providers.reward import (
    STEP_SEPARATOR,
    RewardClient,
    Scored,
    StepScores,
    pooled_score,
    server_root,
)
from tests.servers import free_port, serve

QUESTION = (ChatMessage("user", "What is 17 * 23?"),)
RIGHT = "We need to evaluate 17 × 23.\n\n17 × 23 = 391.\n\nSo the answer is \\boxed{391}."
WRONG = "We need to evaluate 17 × 23.\n\n17 × 23 = 389.\n\nSo the answer is \\boxed{389}."
PROSE = "Multiply seventeen by twenty-three, and you will have it."


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def reward(
    http: httpx.AsyncClient,
    url: str,
    model: str = "reward",
    api: RewardApi = "pooling",
    timeout: float = 10.0,
    key: str | None = None,
) -> RewardClient:
    secret = Secret(key) if key is not None else None
    endpoint = RewardEndpoint(url, model, api, "X_API_KEY" if key else None, secret)
    return RewardClient(http, endpoint, timeout=timeout)


def no_leak(err: BaseException, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in str(err)


# -- outcome reward models on the demo server ---------------------------------------------------


@pytest.mark.parametrize("api", ["classify", "pooling"])
@pytest.mark.parametrize("model", ["reward", "reward-binary"])
@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
async def test_right_answer_outscores_prose_outscores_wrong(
    demo_url: str, http: httpx.AsyncClient, api: RewardApi, model: str, suffix: str
) -> None:
    """Both vLLM shapes, one class and two, base_url at the server root or at /v1."""
    client = reward(http, demo_url + suffix, model, api)
    right, prose, wrong = [await client.score(QUESTION, a) for a in (RIGHT, PROSE, WRONG)]
    assert all(isinstance(s, Scored) for s in (right, prose, wrong))
    assert right.score > 0.8 > 0.6 > prose.score > 0.4 > 0.25 > wrong.score > 0.1


async def test_the_same_text_gets_the_same_score_on_both_apis(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    scores = {
        (model, api): (await reward(http, demo_url, model, api).score(QUESTION, RIGHT)).score
        for model in ("reward", "reward-binary")
        for api in ("classify", "pooling")
    }
    assert len(set(scores.values())) == 1
    # Scores depend on the text alone, with a little variation between texts.
    again = await reward(http, demo_url).score(QUESTION, RIGHT)
    other = await reward(http, demo_url).score(QUESTION, RIGHT.replace("So", "Therefore"))
    assert again.score == scores[("reward", "pooling")] != other.score


@pytest.mark.parametrize("api", ["classify", "pooling"])
async def test_tokens_are_the_servers_usage(
    demo_url: str, http: httpx.AsyncClient, api: RewardApi
) -> None:
    scored = await reward(http, demo_url, api=api).score(QUESTION, RIGHT)
    messages = [{"role": "user", "content": QUESTION[0].content}]
    messages.append({"role": "assistant", "content": RIGHT})
    raw = await http.post(f"{demo_url}/{api}", json={"model": "reward", "messages": messages})
    assert scored.tokens == raw.json()["usage"]["prompt_tokens"] > 0


async def test_unknown_model_is_an_endpoint_error_with_the_servers_words(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, demo_url, "no-such-reward-model").score(QUESTION, RIGHT)
    assert info.value.detail and "does not exist" in info.value.detail
    assert "no-such-reward-model" in info.value.detail
    no_leak(info.value, "no-such-reward-model", demo_url, "does not exist")


@pytest.mark.parametrize("api", ["classify", "pooling"])
async def test_a_chat_model_is_not_a_reward_model(
    demo_url: str, http: httpx.AsyncClient, api: RewardApi
) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, demo_url, "terse", api).score(QUESTION, RIGHT)
    assert str(info.value) == "The reward model rejected the request (HTTP 400)."
    assert info.value.detail and "chat model" in info.value.detail
    no_leak(info.value, "terse")


async def test_a_process_reward_model_has_no_classification_api(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, demo_url, "prm", "classify").score(QUESTION, RIGHT)
    assert info.value.detail and "/pooling" in info.value.detail


async def test_reward_models_are_not_chat_models(demo_url: str, http: httpx.AsyncClient) -> None:
    body = {"model": "reward", "messages": [{"role": "user", "content": "hi"}]}
    response = await http.post(f"{demo_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "pooling model" in response.json()["error"]["message"]


async def test_connection_refused_is_a_provider_error(http: httpx.AsyncClient) -> None:
    with pytest.raises(ConnectError) as info:
        await reward(http, f"http://127.0.0.1:{free_port()}/v1").score(QUESTION, RIGHT)
    assert isinstance(info.value, ProviderError)
    no_leak(info.value, "127.0.0.1")


# -- process reward model on the demo server ----------------------------------------------------


def steps_of(text: str) -> list[str]:
    return [s.strip() for s in text.split("\n\n") if s.strip()]


async def math_sample(http: httpx.AsyncClient, url: str, **params: Any) -> str:
    body = {"model": "math", "messages": [{"role": "user", "content": QUESTION[0].content}]}
    response = await http.post(f"{url}/v1/chat/completions", json={**body, **params})
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


async def test_sound_solution_scores_high_at_every_step(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    steps = steps_of(await math_sample(http, demo_url, temperature=0))
    result = await reward(http, demo_url, "prm").step_scores(QUESTION, steps)
    assert isinstance(result, StepScores)
    assert len(result.scores) == len(steps) >= 3
    assert min(result.scores) > 0.8
    assert result.tokens > 0


async def test_the_slipped_step_scores_lowest(demo_url: str, http: httpx.AsyncClient) -> None:
    slipped = []
    for seed in range(32):
        text = await math_sample(http, demo_url, temperature=1.0, seed=seed)
        if "\\boxed{391}" not in text:
            slipped.append(steps_of(text))
    assert slipped, "the math model never slipped in 32 samples at temperature 1"
    client = reward(http, demo_url, "prm", "pooling")
    for steps in slipped[:4]:
        scores = (await client.step_scores(QUESTION, steps)).scores
        assert len(scores) == len(steps)
        low = scores.index(min(scores))
        assert min(scores) < 0.1
        assert all(s > 0.8 for s in scores[:low])  # sound until the slip
        assert all(0.1 < s < 0.6 for s in scores[low + 1 :])  # carried on from it
        # The lowest is the first step whose arithmetic is wrong.
        assert [holds(step) for step in steps[: low + 1]] == [True] * low + [False]


def holds(step: str) -> bool:
    """Whether every "a op b = c" of whole numbers in a step is right."""
    ops = {"+": int.__add__, "-": int.__sub__, "×": int.__mul__}
    return all(
        ops[op](int(a), int(b)) == int(c)
        for a, op, b, c in re.findall(r"(-?\d+) ([-+×]) (-?\d+) = (-?\d+)", step)
    )


async def test_step_scores_ignore_the_endpoints_api(demo_url: str, http: httpx.AsyncClient) -> None:
    """A PRM is read through /pooling whatever `api` says."""
    steps = ["17 × 20 = 340.", "17 × 3 = 51.", "340 + 51 = 391."]
    a = await reward(http, demo_url, "prm", "classify").step_scores(QUESTION, steps)
    b = await reward(http, demo_url, "prm", "pooling").step_scores(QUESTION, steps)
    assert a == b and len(a.scores) == 3


async def test_a_separator_inside_a_step_does_not_shift_the_scores(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    steps = [f"17 × 20 = 340.{STEP_SEPARATOR}", "17 × 3 = 52.", "340 + 52 = 392."]
    scores = (await reward(http, demo_url, "prm").step_scores(QUESTION, steps)).scores
    assert len(scores) == 3
    assert scores.index(min(scores)) == 1


async def test_no_steps_no_request(http: httpx.AsyncClient) -> None:
    client = reward(http, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert await client.step_scores(QUESTION, []) == StepScores((), 0)


async def test_an_outcome_model_cannot_score_steps(demo_url: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, demo_url, "reward").step_scores(QUESTION, ["1 + 1 = 2."])
    assert str(info.value) == "The reward model sent a malformed answer."
    assert info.value.detail


# -- shapes and failures from a server of our own -------------------------------------------------


SEEN: list[tuple[str, str | None]] = []  # (path, Authorization header) of each request


@pytest.fixture(scope="module")
def odd_reward_server() -> Iterator[str]:
    """Replies chosen by the last message's content."""

    async def handle(request: Request) -> Response:
        SEEN.append((request.url.path, request.headers.get("authorization")))
        body = await request.json()
        mode = body["messages"][-1]["content"]
        usage = {"prompt_tokens": 7, "total_tokens": 7}
        if mode == "auth":
            return JSONResponse({"data": [{"index": 0, "data": [0.5], "probs": [0.5]}]})
        if mode == "token-wise":  # Qwen2.5-Math-RM: one row per token, read at the last
            rows = [[0.1], [0.2], [0.7]]
            return JSONResponse({"data": [{"index": 0, "data": rows}], "usage": usage})
        if mode == "no-usage":
            return JSONResponse({"data": [{"index": 0, "data": [0.3]}]})
        if mode == "three-classes":
            probs = [0.2, 0.3, 0.5]
            return JSONResponse({"data": [{"index": 0, "probs": probs, "data": probs}]})
        if mode == "not-json":
            return PlainTextResponse("<html>proxy says hello</html>")
        if mode == "boom":
            said = {"error": {"message": "CUDA out of memory in secret-rm-70b", "code": 500}}
            return JSONResponse(said, status_code=500)
        if mode == "slow":
            await asyncio.sleep(3)
        return JSONResponse({"data": [{"index": 0, "data": [0.9]}], "usage": usage})

    app = Starlette(
        routes=[
            Route("/pooling", handle, methods=["POST"]),
            Route("/classify", handle, methods=["POST"]),
        ]
    )
    with serve(app, "/pooling") as url:
        yield url


async def test_bearer_key_is_sent(odd_reward_server: str, http: httpx.AsyncClient) -> None:
    client = reward(http, odd_reward_server + "/v1", key="sk-reward-secret")
    assert (await client.score([], "auth")).score == 0.5
    assert SEEN[-1] == ("/pooling", "Bearer sk-reward-secret")
    await reward(http, odd_reward_server, api="classify").score([], "auth")
    assert SEEN[-1] == ("/classify", None)  # no key, no header


async def test_token_wise_outcome_model_is_read_at_the_last_token(
    odd_reward_server: str, http: httpx.AsyncClient
) -> None:
    scored = await reward(http, odd_reward_server).score(QUESTION, "token-wise")
    assert scored == Scored(score=0.7, tokens=7)


async def test_tokens_are_estimated_without_usage(
    odd_reward_server: str, http: httpx.AsyncClient
) -> None:
    scored = await reward(http, odd_reward_server).score(QUESTION, "no-usage")
    assert scored.score == 0.3
    assert scored.tokens == (len(QUESTION[0].content) + 3) // 4 + (len("no-usage") + 3) // 4


@pytest.mark.parametrize("api", ["classify", "pooling"])
async def test_more_than_two_classes_is_refused(
    odd_reward_server: str, http: httpx.AsyncClient, api: RewardApi
) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, odd_reward_server, api=api).score(QUESTION, "three-classes")
    assert info.value.detail and "3 classes" in info.value.detail


async def test_a_reply_that_is_not_json(odd_reward_server: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, odd_reward_server).score(QUESTION, "not-json")
    assert str(info.value) == "The reward model sent a malformed answer."
    assert info.value.detail and "proxy says hello" in info.value.detail


async def test_server_error_text_is_for_the_operator_only(
    odd_reward_server: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(EndpointError) as info:
        await reward(http, odd_reward_server, key="sk-reward-secret").score(QUESTION, "boom")
    assert str(info.value) == "The reward model server failed (HTTP 500)."
    assert info.value.detail == "CUDA out of memory in secret-rm-70b"
    no_leak(info.value, "secret-rm-70b", "sk-reward-secret", odd_reward_server)


async def test_timeout(odd_reward_server: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(TotalTimeout):
        await reward(http, odd_reward_server, timeout=0.5).score(QUESTION, "slow")


def test_server_root() -> None:
    assert server_root("http://h:8000/v1") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert server_root("http://h:8000") == "http://h:8000"
    assert server_root("http://h/rm/") == "http://h/rm"


def test_pooled_score_shapes() -> None:
    assert pooled_score([0.25]) == 0.25  # one class
    assert pooled_score([0.25, 0.75]) == 0.75  # [negative, positive]
    assert pooled_score([[0.1, 0.9], [0.6, 0.4]]) == 0.4  # token-wise: the last token
    bad: Any
    for bad in ([], None, "x", [True], [float("nan")], [[]]):
        with pytest.raises(EndpointError):
            pooled_score(bad)
