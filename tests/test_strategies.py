"""Test-time-compute strategies (issue 7, §4): the selection rules, then StrategyProvider.

Streams are tested over real HTTP: the demo model server, or a hand-written endpoint below
for what the demo server never does (answers that depend on the seed, failures, no usage,
slow streams that record their end). The selection flow with known reward scores uses a
tiny in-test provider and scorer instead (see `Fixed`), since HTTP is not the point there.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arena.config import Endpoint, RewardEndpoint, Strategy, Timeouts
from arena.errors import EndpointError, ProviderError
from arena.providers.base import ChatMessage, ChatRequest, Chunk, Provider, Usage
from arena.providers.openai import OpenAIProvider
from arena.providers.reward import RewardClient, Scored, StepScores
from arena.providers.selection import (
    aggregate,
    best_index,
    extract_answer,
    majority,
    normalise_answer,
    split_steps,
    weighted_vote,
)
from arena.providers.strategies import RewardFailed, StrategyProvider
from tests.servers import serve

FAST = Timeouts(connect=2, first_token=5, between_tokens=5, total=20)
REWARD = RewardEndpoint(base_url="http://127.0.0.1:9/v1", model="rm")  # never called here
QUESTION = (ChatMessage("user", "What is 1/4 + 1/4?"),)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def openai(client: httpx.AsyncClient, url: str, model: str) -> OpenAIProvider:
    return OpenAIProvider(client, Endpoint(base_url=url + "/v1", model=model), FAST)


async def chunks(provider: Provider, **params: Any) -> list[Chunk]:
    return [c async for c in provider.stream_chat(ChatRequest(QUESTION, params))]


def answer_of(out: list[Chunk]) -> dict[str, Any]:
    """What a consumer makes of the stream: the answer, the progress words, the rest."""
    usage = [c.usage for c in out if c.usage]
    candidates = [c.candidates for c in out if c.candidates]
    assert len(usage) == 1 and len(candidates) == 1  # each sent once
    return {
        "content": "".join(c.content for c in out),
        "reasoning": "".join(c.reasoning for c in out),
        "progress": [c.progress for c in out if c.progress],
        "usage": usage[0],
        "candidates": candidates[0],
        "finish": [c.finish_reason for c in out if c.finish_reason],
        "endpoint": [c.endpoint for c in out if c.endpoint],
    }


# -- extracting and normalising answers ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So it is \\boxed{42}.", "42"),
        ("Half: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}} is it", "\\frac{\\sqrt{2}}{2}"),
        ("First \\boxed{1}, then corrected: \\boxed{2}", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are characters
        ("\\boxed{7} and a cut-off \\boxed{\\frac{1}{", "7"),  # unbalanced last box skipped
        ("\\boxed {x + 1}", "x + 1"),
        ("\\fbox{5}", "5"),
        ("Reasoning...\nAnswer: 12\n", "12"),
        ("Work.\n\nfinal answer: $3.5$", "$3.5$"),
        ("Work.\nFINAL ANSWER:   -4  ", "-4"),
        ("**Final Answer:** 9", "9"),
        ("**Answer**: 10", "10"),
        ("Answer: 5\nAnswer: 6\nThat is all I have to say.", "6"),
        ("Answer: 1\n\nThe reasoning was short.", "1"),  # a later prose line is no answer
        ("Answer:\nI do not know.", "I do not know."),  # an empty Answer: line is not one
        ("Just some text\nthe last line  \n\n  ", "the last line"),
        ("only line", "only line"),
        ("\\boxed{5}\nAnswer: 6", "5"),  # a box beats an Answer: line
        ("", None),
        ("  \n \n", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", "42"),
        ("  42  ", "42"),
        ("$42$", "42"),
        ("42.", "42"),
        ("$42$.", "42"),
        ("\\text{Paris}", "paris"),
        ("\\textbf{\\text{B}}", "b"),
        ("\\mathrm{(C)}", "(c)"),
        ("1,000", "1000"),
        ("1,234,567.50", "1234567.5"),
        ("1,2", "1,2"),  # a pair, not a thousand
        ("12,34", "12,34"),
        ("0.50", "0.5"),
        ("2.0", "2"),
        ("2.", "2"),
        ("+3", "3"),
        ("-0.0", "0"),
        (".5", "0.5"),
        ("100", "100"),
        ("007", "7"),
        ("-2.500", "-2.5"),
        ("\\frac{1}{2}", "1/2"),
        ("\\dfrac{1}{2}", "1/2"),
        ("\\tfrac{3}{4}", "3/4"),
        ("\\frac12", "1/2"),
        ("\\frac{ 1 }{ 2 }", "1/2"),
        ("-\\frac{1}{2}", "-1/2"),
        ("\\frac{-1}{2}", "-1/2"),
        ("1/2", "1/2"),
        ("1 / 2", "1/2"),
        ("$\\frac{1}{2}$.", "1/2"),
        ("2/4", "2/4"),  # not reduced
        ("\\frac{x}{2}", "\\frac{x}{2}"),  # only fractions of integers
        ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{2}}{2}"),
        ("YES", "yes"),
        ("x  =   5", "x = 5"),  # spaces collapsed, the "x =" kept
        ("5 cm", "5 cm"),  # units kept
        ("...", "..."),
    ],
)
def test_normalise_answer(text: str, expected: str) -> None:
    assert normalise_answer(text) == expected
    assert normalise_answer(expected) == expected  # normalising twice changes nothing


def test_answers_that_differ_in_form_vote_together() -> None:
    forms = ["\\boxed{\\frac{1}{2}}", "Answer: $1/2$.", "So:\n\\dfrac12", "\\boxed{\\text{1/2}}"]
    assert {normalise_answer(extract_answer(f) or "") for f in forms} == {"1/2"}
    numbers = ["\\boxed{1,000}", "Final answer: 1000.0", "\\boxed{+1000}"]
    assert {normalise_answer(extract_answer(f) or "") for f in numbers} == {"1000"}


# -- steps and aggregation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("a\n\nb", ["a", "b"]),
        ("a\n\n\n\nb", ["a", "b"]),
        ("a\n   \n\t\nb", ["a", "b"]),  # lines of spaces are blank too
        ("a\nstill a\n\nb", ["a\nstill a", "b"]),  # a single newline is within a step
        ("\n\n  a  \n\nb\n\n", ["a", "b"]),
        ("a\r\n\r\nb", ["a", "b"]),
        ("one step", ["one step"]),
        ("", []),
        (" \n\n \n", []),
    ],
)
def test_split_steps(text: str, steps: list[str]) -> None:
    assert split_steps(text) == steps


def test_aggregate() -> None:
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "product") == pytest.approx(0.36)
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "last") == 0.8
    assert aggregate([0.7], "product") == 0.7
    with pytest.raises(ValueError, match="at least one step"):
        aggregate([], "product")
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate([0.5], "mean")  # type: ignore[arg-type]


# -- choosing -----------------------------------------------------------------------------


def test_best_index() -> None:
    assert best_index([0.1, 0.9, 0.5]) == 1
    assert best_index([0.9, 0.2, 0.9]) == 0  # a tie: the first
    assert best_index([-3.0, -1.0, -2.0]) == 1  # logits are fine
    assert best_index([math.nan, 0.1]) == 1  # NaN ranks lowest
    assert best_index([math.nan, math.nan]) == 0
    with pytest.raises(ValueError):
        best_index([])


def test_majority() -> None:
    assert majority(["5", "7", "7"]) == 1  # the winning answer's first candidate
    assert majority(["5", "7", "7", "5"]) == 0  # a tie: the answer that came first
    assert majority(["7", "5", "5", "7"]) == 0
    assert majority([None, None, "3"]) == 2  # no answer is no vote
    assert majority([None, None]) == 0  # ... unless nobody answered
    # Tie-break by the summed reward: "9" sums 0.7 against "4"'s 0.5; its best candidate.
    assert majority(["4", "9", "4", "9"], [0.2, 0.1, 0.3, 0.6]) == 3
    # Scores never overturn a majority, and choose the best candidate within it.
    assert majority(["4", "4", "9"], [0.1, 0.2, 0.99]) == 1
    # Equal sums: the first answer, then its first best-scored candidate.
    assert majority(["4", "9", "4", "9"], [0.25, 0.25, 0.25, 0.25]) == 0
    with pytest.raises(ValueError):
        majority([])
    with pytest.raises(ValueError, match="2 scores for 3 answers"):
        majority(["1", "2", "3"], [0.1, 0.2])


def test_weighted_vote() -> None:
    answers = ["5", "7", "5", "7", "5"]
    scores = [0.3, 0.8, 0.3, 0.9, 0.3]
    assert majority(answers) == 0  # "5" has the votes...
    assert weighted_vote(answers, scores) == 3  # ... "7" the reward; its best candidate
    assert weighted_vote(["5", "7"], [0.5, 0.5]) == 0  # a tie: the first answer
    assert weighted_vote(["5", "5", "7"], [0.2, 0.4, 0.5]) == 1
    assert weighted_vote([None, "7"], [0.9, 0.1]) == 1  # no answer is no vote
    with pytest.raises(ValueError):
        weighted_vote([], [])


# -- the selection flow with known scores --------------------------------------------------


@dataclass
class Fixed:
    """A sampler with no HTTP, for selection-flow tests only (known scores, HTTP not the
    point): sample i (params seed=i) answers `answers[i]`, or raises when that is an
    exception. Stream-level behaviour is tested over HTTP below."""

    answers: Sequence[str | Exception]
    requests: list[ChatRequest] = field(default_factory=list)

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        i = request.params["seed"]
        answer = self.answers[i]
        if isinstance(answer, Exception):
            raise answer
        yield Chunk(reasoning=f"thinking {i}")
        yield Chunk(content=answer, endpoint=f"replica-{i}")
        yield Chunk(finish_reason="stop" if i % 2 == 0 else "length")
        yield Chunk(usage=Usage(prompt_tokens=10, completion_tokens=100 + i, reasoning_tokens=i))


@dataclass
class Scorer:
    """A reward model with known scores (no HTTP, selection-flow tests only): `scores` by
    answer or by step; each call costs 7 tokens."""

    scores: dict[str, float] = field(default_factory=dict)
    fail: Exception | None = None
    calls: int = 0

    async def score(self, messages: Sequence[ChatMessage], answer: str) -> Scored:
        assert tuple(messages) == QUESTION
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return Scored(score=self.scores[answer], tokens=7)

    async def step_scores(
        self, messages: Sequence[ChatMessage], steps: Sequence[str]
    ) -> StepScores:
        assert tuple(messages) == QUESTION
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return StepScores(scores=tuple(self.scores[s] for s in steps), tokens=7)


async def run(
    kind: str, answers: Sequence[str | Exception], scores: dict[str, float] | None, **kw: Any
) -> dict[str, Any]:
    scorer = Scorer(scores) if scores is not None else None
    s = Strategy(kind=kind, n=len(answers), reward=REWARD if scorer else None, **kw)  # type: ignore[arg-type]
    out = await chunks(StrategyProvider(Fixed(answers), s, scorer), seed=0)
    return answer_of(out)


def chosen(result: dict[str, Any]) -> int:
    flags = [c.chosen for c in result["candidates"]]
    assert flags.count(True) == 1
    return flags.index(True)


async def test_best_of_n_takes_the_highest_reward() -> None:
    answers = ["a", "b", "c", "d"]
    result = await run("best_of_n", answers, {"a": 0.2, "b": 0.9, "c": 0.4, "d": 0.9})
    assert chosen(result) == 1  # b and d tie: the first
    assert result["content"] == "b" and result["reasoning"] == "thinking 1"
    assert result["endpoint"] == ["replica-1"] and result["finish"] == ["length"]
    assert [c.score for c in result["candidates"]] == [0.2, 0.9, 0.4, 0.9]
    assert [c.endpoint for c in result["candidates"]] == [f"replica-{i}" for i in range(4)]
    assert result["progress"] == [
        *(f"sampling {k}/4" for k in range(5)),
        *(f"scoring {k}/4" for k in range(5)),
    ]


async def test_the_chosen_answer_comes_in_order_after_the_progress() -> None:
    s = Strategy(kind="best_of_n", n=2, reward=REWARD)
    scorer = Scorer({"x": 0.1, "y": 0.2})
    out = await chunks(StrategyProvider(Fixed(["x", "y"]), s, scorer), seed=0)
    tail = out[-6:]
    assert all(c.progress for c in out[:-6])
    assert tail[0] == Chunk(reasoning="thinking 1")
    assert tail[1] == Chunk(content="y")
    assert tail[2] == Chunk(endpoint="replica-1")
    assert tail[3].usage is not None and tail[4].candidates
    assert tail[5] == Chunk(finish_reason="length")  # last, as a plain stream ends


@pytest.mark.parametrize(("how", "winner"), [("product", 1), ("min", 0), ("last", 2)])
async def test_process_reward_aggregates_step_scores(how: str, winner: int) -> None:
    answers = ["a1\n\na2", "b1\n\nb2", "c1\n\nc2\n\n\nc3"]
    steps = {"a1": 0.9, "a2": 0.9, "b1": 1.0, "b2": 0.85, "c1": 0.5, "c2": 0.5, "c3": 0.95}
    # product: a 0.81, b 0.85, c 0.2375; min: a 0.9, b 0.85, c 0.5; last: 0.9, 0.85, 0.95
    result = await run("process_reward", answers, steps, aggregate=how)
    assert chosen(result) == winner
    candidates = result["candidates"]
    assert [c.step_scores for c in candidates] == [(0.9, 0.9), (1.0, 0.85), (0.5, 0.5, 0.95)]
    assert candidates[winner].score == pytest.approx(
        aggregate(candidates[winner].step_scores, how)  # type: ignore[arg-type]
    )


async def test_process_reward_never_chooses_an_answer_with_no_steps() -> None:
    result = await run("process_reward", ["", "a\n\nb"], {"a": 0.1, "b": 0.1})
    assert chosen(result) == 1
    assert result["candidates"][0].score is None
    assert result["usage"].reward_calls == 1  # nothing to score, no call


async def test_self_consistency_takes_the_majority_answer() -> None:
    answers = ["Answer: 3", "\\boxed{\\frac{1}{2}}", "So:\n1/2.", "Final answer: 3.0", "$0.5$"]
    result = await run("self_consistency", [*answers, "\\boxed{1 / 2}"], None)
    # 1/2 three times, 3 twice, 0.5 once (not merged with 1/2: conservative)
    assert chosen(result) == 1
    assert [c.extracted for c in result["candidates"]] == ["3", "1/2", "1/2", "3", "0.5", "1/2"]
    assert [c.score for c in result["candidates"]] == [None] * 6
    assert result["usage"].reward_calls == 0
    assert not any(p.startswith("scoring") for p in result["progress"])


async def test_self_consistency_breaks_ties_by_reward_only_with_a_reward_model() -> None:
    answers = ["Answer: 4", "Answer: 9", "Answer: 4 ", "Answer: 9."]
    plain = await run("self_consistency", answers, None)
    assert chosen(plain) == 0  # 2-2: the answer that came first, its first candidate
    scores = {"Answer: 4": 0.2, "Answer: 9": 0.1, "Answer: 4 ": 0.3, "Answer: 9.": 0.6}
    scored = await run("self_consistency", answers, scores)
    assert chosen(scored) == 3  # 9 sums 0.7 against 0.5; its best candidate
    assert scored["usage"].reward_calls == 4


async def test_weighted_vote_sums_the_reward_per_answer() -> None:
    answers = ["Answer: 5", "Answer: 7", "Answer: 5.0", "\\boxed{7}", "Answer: +5"]
    scores = {"Answer: 5": 0.3, "Answer: 7": 0.8, "Answer: 5.0": 0.3, "\\boxed{7}": 0.9}
    result = await run("weighted_vote", answers, {**scores, "Answer: +5": 0.3})
    assert chosen(result) == 3  # 7 sums 1.7 against 0.9; its best candidate
    assert [c.extracted for c in result["candidates"]] == ["5", "7", "5", "7", "5"]


async def test_usage_sums_every_sample_and_reward_call() -> None:
    result = await run("best_of_n", ["a", "b", "c"], {"a": 0.1, "b": 0.2, "c": 0.3})
    candidates = result["candidates"]
    for i, c in enumerate(candidates):
        assert c.usage == Usage(
            prompt_tokens=10,
            completion_tokens=100 + i,
            reasoning_tokens=i,
            samples=1,
            reward_calls=1,
            reward_tokens=7,
        )
    total = result["usage"]
    assert total == Usage(
        prompt_tokens=30,
        completion_tokens=303,
        reasoning_tokens=3,
        samples=3,
        reward_calls=3,
        reward_tokens=21,
    )


async def test_a_failed_sample_is_a_candidate_and_the_rest_choose() -> None:
    answers: list[str | Exception] = [
        "a",
        EndpointError("The model server failed (HTTP 500)."),
        "c",
    ]
    result = await run("best_of_n", answers, {"a": 0.1, "c": 0.2})
    assert chosen(result) == 2
    failed = result["candidates"][1]
    assert failed.error == "The model server failed (HTTP 500)."
    assert failed.content == "" and failed.score is None and not failed.chosen
    assert failed.usage == Usage(samples=0)  # it never ran
    assert result["usage"].samples == 2 and result["usage"].reward_calls == 2


async def test_all_samples_failing_raises_the_first_error() -> None:
    first, second = EndpointError("first", "detail 1"), EndpointError("second")
    s = Strategy(kind="best_of_n", n=2, reward=REWARD)
    scorer = Scorer()
    provider = StrategyProvider(Fixed([first, second]), s, scorer)
    with pytest.raises(EndpointError) as info:
        await chunks(provider, seed=0)
    assert info.value is first and info.value.detail == "detail 1"
    assert scorer.calls == 0


@pytest.mark.parametrize(
    ("fail", "detail"),
    [
        (ProviderError("The reward server failed (HTTP 500).", "CUDA out of memory"), "CUDA"),
        (ProviderError("The reward server failed."), "The reward server failed."),
        (RuntimeError("bad reply"), "RuntimeError: bad reply"),
    ],
)
async def test_a_failing_reward_model_is_a_provider_error(fail: Exception, detail: str) -> None:
    s = Strategy(kind="best_of_n", n=2, reward=REWARD)
    scorer = Scorer(fail=fail)
    with pytest.raises(RewardFailed) as info:
        await chunks(StrategyProvider(Fixed(["a", "b"]), s, scorer), seed=0)
    assert isinstance(info.value, ProviderError)
    assert str(info.value) == "The reward model failed to score the answers."
    assert info.value.detail is not None and detail in info.value.detail


async def test_a_process_reward_model_must_score_every_step() -> None:
    @dataclass
    class Short(Scorer):
        async def step_scores(
            self, messages: Sequence[ChatMessage], steps: Sequence[str]
        ) -> StepScores:
            return StepScores(scores=(0.5,), tokens=3)

    s = Strategy(kind="process_reward", n=1, reward=REWARD)
    with pytest.raises(RewardFailed) as info:
        await chunks(StrategyProvider(Fixed(["a\n\nb"]), s, Short()), seed=0)
    assert info.value.detail == "the process reward model gave 1 scores for 2 steps"


def test_strategies_that_need_a_reward_model_say_so() -> None:
    for kind in ("best_of_n", "process_reward", "weighted_vote"):
        with pytest.raises(ValueError, match="needs a reward model"):
            StrategyProvider(Fixed([]), Strategy(kind=kind, n=2), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one sample"):
        StrategyProvider(Fixed([]), Strategy(kind="self_consistency", n=0), None)
    StrategyProvider(Fixed([]), Strategy(kind="self_consistency", n=2), None)


# -- streams over HTTP ---------------------------------------------------------------------


async def collect_plain(provider: Provider, **params: Any) -> dict[str, Any]:
    """One answer of `provider` as a plain stream gives it."""
    out = [c async for c in provider.stream_chat(ChatRequest(QUESTION, params))]
    usage = [c.usage for c in out if c.usage]
    return {
        "content": "".join(c.content for c in out),
        "reasoning": "".join(c.reasoning for c in out),
        "usage": usage[-1] if usage else None,
    }


async def test_demo_reasoner_usage_is_each_samples_usage_summed(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    sampler = openai(http, demo_url, "reasoner")
    # Greedy: the demo server answers the same prompt alike, so each sample is this one.
    plain = await collect_plain(sampler, temperature=0.0)
    s = Strategy(kind="self_consistency", n=3, temperature=0.0)
    result = answer_of(await chunks(StrategyProvider(sampler, s, None)))
    assert result["content"] == plain["content"]
    assert result["reasoning"] == plain["reasoning"]
    assert result["finish"] == ["stop"]
    assert result["progress"] == [f"sampling {k}/3" for k in range(4)]
    candidates = result["candidates"]
    assert len(candidates) == 3 and chosen(result) == 0
    for c in candidates:
        assert c.usage == plain["usage"]  # the server's own count, samples=1
        assert (c.content, c.reasoning) == (plain["content"], plain["reasoning"])
        assert c.extracted == normalise_answer(plain["content"])
    total = result["usage"]
    assert total.samples == 3 and total.reward_calls == 0
    u = plain["usage"]
    assert (total.prompt_tokens, total.completion_tokens, total.reasoning_tokens) == (
        3 * u.prompt_tokens,
        3 * u.completion_tokens,
        3 * u.reasoning_tokens,
    )


# A hand-written endpoint for what the demo server never does.

BY_SEED = [
    "Adding halves: \\boxed{\\frac{1}{2}}",
    "Answer: 3",
    "Two quarters.\n\n$\\dfrac{1}{2}$.",
    "Final answer: 3.0",
    "\\boxed{1/2}",
]
SLOW_TOKENS = 400


@dataclass
class OddServer:
    url: str
    bodies: list[dict[str, Any]]
    opened: list[int]
    closed: list[int]


def sse(**fields: Any) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, **fields}]}) + "\n\n"


@pytest.fixture(scope="module")
def odd() -> Iterator[OddServer]:
    bodies: list[dict[str, Any]] = []
    opened: list[int] = []
    closed: list[int] = []

    async def chat(request: Request) -> Response:
        body = await request.json()
        bodies.append(body)
        model, seed = body["model"], body.get("seed") or 0
        if model == "broken" or (model == "flaky" and seed % 2 == 1):
            said = {"error": {"message": f"sample {seed}: out of memory on gpu-3"}}
            return JSONResponse(said, status_code=500)

        async def answer(
            content: str, reasoning: str = "", usage: bool = True
        ) -> AsyncIterator[str]:
            if reasoning:
                yield sse(delta={"reasoning": reasoning}, finish_reason=None)
            yield sse(delta={"content": content}, finish_reason=None)
            yield sse(delta={}, finish_reason="stop")
            if usage:
                u = {"prompt_tokens": 5, "completion_tokens": 10 + seed}
                yield "data: " + json.dumps({"choices": [], "usage": u}) + "\n\n"
            yield "data: [DONE]\n\n"

        if model == "slow":

            async def slow() -> AsyncIterator[str]:
                opened.append(seed)
                try:
                    for _ in range(SLOW_TOKENS):
                        yield sse(delta={"content": "word "}, finish_reason=None)
                        await asyncio.sleep(0.05)
                    yield sse(delta={}, finish_reason="stop")
                finally:
                    closed.append(seed)

            return StreamingResponse(slow(), media_type="text/event-stream")
        if model == "dies-midway" and seed % 2 == 1:

            async def dies() -> AsyncIterator[str]:
                yield sse(delta={"content": "partial answer"}, finish_reason=None)
                yield "data: " + json.dumps({"error": "worker 3 died"}) + "\n\n"

            return StreamingResponse(dies(), media_type="text/event-stream")
        if model == "reasoning-uncounted":  # usage without completion_tokens_details
            return StreamingResponse(
                answer("ok", "some reasoning here"), media_type="text/event-stream"
            )
        if model == "no-usage":
            return StreamingResponse(
                answer("twelve chars", "sixteen chars..", usage=False),
                media_type="text/event-stream",
            )
        text = (
            BY_SEED[seed % len(BY_SEED)] if model in ("by-seed", "flaky", "dies-midway") else "ok"
        )
        return StreamingResponse(answer(text), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with serve(app, "/v1/chat/completions") as url:
        yield OddServer(url, bodies, opened, closed)


async def test_samples_get_the_strategy_temperature_and_seeds_in_turn(
    odd: OddServer, http: httpx.AsyncClient
) -> None:
    odd.bodies.clear()
    s = Strategy(kind="self_consistency", n=3, temperature=0.7)
    await chunks(StrategyProvider(openai(http, odd.url, "by-seed"), s, None), seed=40, top_p=0.9)
    sent = sorted(odd.bodies, key=lambda b: b["seed"])
    assert [b["seed"] for b in sent] == [40, 41, 42]
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 for b in sent)
    assert all(b["messages"] == [{"role": "user", "content": QUESTION[0].content}] for b in sent)
    odd.bodies.clear()
    s = Strategy(kind="self_consistency", n=2)  # no temperature: the entry's own stays
    await chunks(StrategyProvider(openai(http, odd.url, "ok"), s, None), temperature=0.2)
    assert [(b.get("seed"), b["temperature"]) for b in odd.bodies] == [(None, 0.2)] * 2


async def test_self_consistency_over_http(odd: OddServer, http: httpx.AsyncClient) -> None:
    s = Strategy(kind="self_consistency", n=5)
    result = answer_of(
        await chunks(StrategyProvider(openai(http, odd.url, "by-seed"), s, None), seed=0)
    )
    assert [c.extracted for c in result["candidates"]] == ["1/2", "3", "1/2", "3", "1/2"]
    assert chosen(result) == 0 and result["content"] == BY_SEED[0]
    assert result["usage"].samples == 5
    assert result["usage"].completion_tokens == sum(10 + seed for seed in range(5))


async def test_failed_samples_over_http(odd: OddServer, http: httpx.AsyncClient) -> None:
    s = Strategy(kind="self_consistency", n=5)
    out = await chunks(StrategyProvider(openai(http, odd.url, "flaky"), s, None), seed=0)
    result = answer_of(out)
    errors = [c.error for c in result["candidates"]]
    assert errors == [None, "The model server failed (HTTP 500).", None, errors[1], None]
    assert "gpu-3" not in "".join(str(c) for c in out)  # the server's words stay out
    assert [c.extracted for c in result["candidates"]] == ["1/2", None, "1/2", None, "1/2"]
    assert chosen(result) == 0
    usage = result["usage"]
    assert usage.samples == 3  # the failed ones never ran
    assert usage == sum((c.usage for c in result["candidates"]), Usage(samples=0))


async def test_a_sample_failing_midway_ran_and_costs_what_it_streamed(
    odd: OddServer, http: httpx.AsyncClient
) -> None:
    s = Strategy(kind="self_consistency", n=3)
    out = await chunks(StrategyProvider(openai(http, odd.url, "dies-midway"), s, None), seed=0)
    result = answer_of(out)
    failed = result["candidates"][1]
    assert failed.error == "The model server reported an error while answering."
    assert failed.content == "partial answer" and not failed.chosen
    assert "worker 3" not in "".join(str(c) for c in out)
    prompt = (len(QUESTION[0].content) + 3) // 4
    assert failed.usage == Usage(prompt_tokens=prompt, completion_tokens=4)  # 14 characters
    assert result["usage"].samples == 3
    assert result["usage"].completion_tokens == 10 + 4 + 12  # seeds 0 and 2, and the partial


async def test_all_samples_failing_over_http(odd: OddServer, http: httpx.AsyncClient) -> None:
    s = Strategy(kind="self_consistency", n=3)
    with pytest.raises(EndpointError) as info:
        await chunks(StrategyProvider(openai(http, odd.url, "broken"), s, None), seed=7)
    assert str(info.value) == "The model server failed (HTTP 500)."
    assert info.value.detail == "sample 7: out of memory on gpu-3"  # the first sample's


async def test_a_stream_without_usage_gets_it_counted(
    odd: OddServer, http: httpx.AsyncClient
) -> None:
    s = Strategy(kind="self_consistency", n=2)
    result = answer_of(await chunks(StrategyProvider(openai(http, odd.url, "no-usage"), s, None)))
    assert (result["content"], result["reasoning"]) == ("twelve chars", "sixteen chars..")
    prompt = (len(QUESTION[0].content) + 3) // 4
    each = Usage(
        prompt_tokens=prompt,
        completion_tokens=3 + 4,  # 12 characters and 15, about four a token
        reasoning_tokens=4,
        reasoning_source="counted",
    )
    assert [c.usage for c in result["candidates"]] == [each, each]
    assert result["usage"] == each + each
    assert result["usage"].reasoning_source == "counted"


async def test_reasoning_the_server_did_not_count_is_counted(
    odd: OddServer, http: httpx.AsyncClient
) -> None:
    s = Strategy(kind="self_consistency", n=2)
    out = await chunks(
        StrategyProvider(openai(http, odd.url, "reasoning-uncounted"), s, None), seed=0
    )
    result = answer_of(out)
    assert [c.usage for c in result["candidates"]] == [
        Usage(
            prompt_tokens=5,
            completion_tokens=10 + seed,  # the server's count stays
            reasoning_tokens=5,  # "some reasoning here": 19 characters
            reasoning_source="counted",
        )
        for seed in (0, 1)
    ]
    assert result["usage"].reasoning_tokens == 10
    assert result["usage"].reasoning_source == "counted"


# -- a consumer that stops: nothing outlives it -------------------------------------------


async def wait_for(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_closing_the_stream_ends_every_sample(
    odd: OddServer, http: httpx.AsyncClient
) -> None:
    odd.opened.clear()
    odd.closed.clear()
    s = Strategy(kind="self_consistency", n=4)
    stream = StrategyProvider(openai(http, odd.url, "slow"), s, None).stream_chat(
        ChatRequest(QUESTION, {"seed": 100})
    )
    assert (await anext(stream)).progress == "sampling 0/4"
    await wait_for(lambda: len(odd.opened) == 4)  # every sample is streaming
    await stream.aclose()  # type: ignore[attr-defined]
    assert other_tasks() == set()
    await wait_for(lambda: sorted(odd.closed) == [100, 101, 102, 103])  # the server saw it


async def test_cancelling_the_consumer_ends_every_sample(
    odd: OddServer, http: httpx.AsyncClient
) -> None:
    odd.opened.clear()
    odd.closed.clear()
    got: list[Chunk] = []
    s = Strategy(kind="self_consistency", n=3)
    provider = StrategyProvider(openai(http, odd.url, "slow"), s, None)

    async def consume() -> None:
        async for chunk in provider.stream_chat(ChatRequest(QUESTION, {"seed": 200})):
            got.append(chunk)

    task = asyncio.create_task(consume())
    await wait_for(lambda: len(odd.opened) == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [c.progress for c in got] == ["sampling 0/3"]
    assert other_tasks() == set()
    await wait_for(lambda: sorted(odd.closed) == [200, 201, 202])


async def test_closing_the_stream_while_scoring_cancels_the_reward_calls(
    demo_url: str, http: httpx.AsyncClient
) -> None:
    # The reward model here is an in-test stand-in that never answers: what is tested is
    # that its calls are cancelled, not what it says.
    started: list[str] = []
    cancelled: list[str] = []

    class Stuck(Scorer):
        async def score(self, messages: Sequence[ChatMessage], answer: str) -> Scored:
            started.append(answer)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(answer)
                raise
            raise AssertionError("unreachable")

    s = Strategy(kind="best_of_n", n=3, reward=REWARD)
    stream = StrategyProvider(openai(http, demo_url, "terse"), s, Stuck()).stream_chat(
        ChatRequest(QUESTION)
    )
    progress = []
    async for chunk in stream:
        progress.append(chunk.progress)
        if chunk.progress == "scoring 0/3":
            break
    assert progress[-1] == "scoring 0/3"
    await wait_for(lambda: len(started) == 3)
    await stream.aclose()  # type: ignore[attr-defined]
    assert len(cancelled) == 3 and other_tasks() == set()


# -- end to end: the demo math model and the demo reward models ---------------------------

MATH = (ChatMessage("user", "What is 17 * 23?"),)  # 391; the demo model slips now and then


async def strategy_run(demo_url: str, s: Strategy, seed: int) -> dict[str, Any]:
    client = httpx.AsyncClient()
    scorer = RewardClient(client, s.reward) if s.reward is not None else None
    sampler = OpenAIProvider(client, Endpoint(base_url=demo_url + "/v1", model="math"), FAST)
    provider = StrategyProvider(sampler, s, scorer)
    try:
        out = [c async for c in provider.stream_chat(ChatRequest(MATH, {"seed": seed}))]
    finally:
        await client.aclose()
    return answer_of(out)


def boxed(text: str) -> str | None:
    found = extract_answer(text)
    return normalise_answer(found) if found is not None else None


@pytest.mark.parametrize(
    ("kind", "model", "api"),
    [
        ("best_of_n", "reward", "classify"),
        ("best_of_n", "reward-binary", "pooling"),
        ("process_reward", "prm", "pooling"),
        ("weighted_vote", "reward", "classify"),
    ],
)
async def test_reward_strategies_over_the_demo_math_and_reward_models(
    demo_url: str, kind: str, model: str, api: str
) -> None:
    reward = RewardEndpoint(base_url=demo_url + "/v1", model=model, api=api)  # type: ignore[arg-type]
    s = Strategy(kind=kind, n=8, temperature=1.5, reward=reward, aggregate="min")  # type: ignore[arg-type]
    result = await strategy_run(demo_url, s, seed=16)
    candidates = result["candidates"]
    answers = [boxed(c.content) for c in candidates]
    # At temperature 1.5 most samples slip; the reward finds the one that did not.
    assert answers.count("391") >= 1 and len(set(answers)) > 2
    assert boxed(result["content"]) == "391"
    winner = candidates[chosen(result)]
    assert winner.content == result["content"] and result["finish"] == ["stop"]
    assert all(c.score is not None and 0 < c.score < 1 for c in candidates)
    if kind == "weighted_vote":
        assert [c.extracted for c in candidates] == answers
    else:
        assert winner.score == max(c.score for c in candidates if c.score is not None)
    if kind == "process_reward":
        for c in candidates:
            assert c.step_scores is not None and len(c.step_scores) == len(split_steps(c.content))
            assert c.score == min(c.step_scores)
            assert (c.score > 0.5) == (boxed(c.content) == "391")  # a slipped step scores low
    usage = result["usage"]
    assert usage.samples == 8 and usage.reward_calls == 8 and usage.reward_tokens > 0
    assert usage == sum((c.usage for c in candidates), Usage(samples=0))
    assert result["progress"][-1] == "scoring 8/8"


async def test_self_consistency_over_the_demo_math_model(demo_url: str) -> None:
    result = await strategy_run(
        demo_url, Strategy(kind="self_consistency", n=8, temperature=0.7), 3
    )
    answers = [c.extracted for c in result["candidates"]]
    assert answers == [boxed(c.content) for c in result["candidates"]]
    winner = result["candidates"][chosen(result)]
    assert answers.count(winner.extracted) == max(answers.count(a) for a in answers)
    assert answers.index(winner.extracted) == chosen(result)  # its first candidate
    assert result["usage"].reward_calls == 0 and result["usage"].samples == 8
