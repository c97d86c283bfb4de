"""Test-time-compute strategies Arena runs itself, on top of any endpoint (issue 7, §4).

`StrategyProvider` is a `Provider` wrapping another one (a pool of replicas, an adapter), the
way httpx transports wrap each other: it draws N samples from the wrapped provider at once,
scores them with a reward model where the strategy needs one, and streams the chosen answer
with every candidate and the compute all of them cost. Which sample wins is decided by the
pure functions of `arena.providers.selection`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from arena.answer_style import estimate_tokens
from arena.config import Strategy
from arena.errors import EndpointBusy, NoEndpoint, ProviderError
from arena.providers import selection
from arena.providers.base import Candidate, ChatMessage, ChatRequest, Chunk, Provider, Usage
from arena.providers.reward import Scored, StepScores

log = logging.getLogger(__name__)

# Failures that say the samples found no server with room, rather than that a sample went wrong.
_CAPACITY = (EndpointBusy, NoEndpoint)

# Kinds that cannot choose without a reward model; self-consistency uses one only for ties.
NEEDS_REWARD = frozenset({"best_of_n", "process_reward", "weighted_vote"})
NO_USAGE = Usage(samples=0)


class Scorer(Protocol):
    """A reward model: `arena.providers.reward.RewardClient`, or anything with its two calls."""

    async def score(self, messages: Sequence[ChatMessage], answer: str) -> Scored: ...

    async def step_scores(
        self, messages: Sequence[ChatMessage], steps: Sequence[str]
    ) -> StepScores: ...


@dataclass
class _Sample:
    """One sample as it streamed in."""

    content: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    endpoint: str | None = None
    error: ProviderError | None = None
    # Filled by scoring:
    score: float | None = None
    step_scores: tuple[float, ...] | None = None
    extracted: str | None = None
    reward: Usage = NO_USAGE  # the reward model calls it cost


class RewardFailed(ProviderError):
    """The reward model could not score the samples."""


def _estimated(messages: Sequence[ChatMessage], sample: _Sample) -> Usage | None:
    """Usage counted from the text, for a sample whose stream carried none. A failed sample
    that streamed nothing did not run: it costs nothing and is no sample; one that failed
    midway ran, and costs what it streamed."""
    if sample.error is not None and not (sample.content or sample.reasoning):
        return None
    reasoning = estimate_tokens(sample.reasoning) if sample.reasoning else None
    return Usage(
        prompt_tokens=sum(estimate_tokens(m.content) for m in messages),
        completion_tokens=estimate_tokens(sample.content) + (reasoning or 0),
        reasoning_tokens=reasoning,
        reasoning_source="counted" if reasoning is not None else None,
    )


class StrategyProvider:
    """A `Provider` that answers with the best of N samples of `sampler`, by `strategy`."""

    def __init__(self, sampler: Provider, strategy: Strategy, reward: Scorer | None) -> None:
        if strategy.n < 1:
            raise ValueError(f"a strategy needs at least one sample, not {strategy.n}")
        if strategy.kind not in (*NEEDS_REWARD, "self_consistency"):
            raise ValueError(f"unknown strategy {strategy.kind!r}")
        if strategy.kind in NEEDS_REWARD and reward is None:
            raise ValueError(f"strategy {strategy.kind} needs a reward model")
        self.sampler = sampler
        self.strategy = strategy
        self.reward = reward

    # -- sampling ------------------------------------------------------------------------

    def _requests(self, request: ChatRequest) -> list[ChatRequest]:
        """N requests: the strategy's temperature, and seed+i for sample i when seeded."""
        params: dict[str, Any] = dict(request.params)
        if self.strategy.temperature is not None:
            params["temperature"] = self.strategy.temperature
        seed = params.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            return [ChatRequest(request.messages, params)] * self.strategy.n
        return [
            ChatRequest(request.messages, {**params, "seed": seed + i})
            for i in range(self.strategy.n)
        ]

    async def _sample(self, request: ChatRequest) -> _Sample:
        sample = _Sample()
        stream = self.sampler.stream_chat(request)
        try:
            async for chunk in stream:
                if chunk.retract_content:
                    sample.reasoning, sample.content = sample.reasoning + sample.content, ""
                sample.content += chunk.content
                sample.reasoning += chunk.reasoning
                sample.usage = chunk.usage or sample.usage
                sample.finish_reason = chunk.finish_reason or sample.finish_reason
                sample.endpoint = chunk.endpoint or sample.endpoint
        except ProviderError as err:
            sample.error = err
        finally:
            # Close the wrapped stream now, not when it is collected: its HTTP response with it.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if sample.usage is None:
            sample.usage = _estimated(request.messages, sample)
        elif sample.usage.reasoning_tokens is None and sample.reasoning:
            # The server counted the reasoning in completion_tokens without saying how much
            # of them it was: the sum over samples needs it, so count it from the text.
            sample.usage = replace(
                sample.usage,
                reasoning_tokens=estimate_tokens(sample.reasoning),
                reasoning_source="counted",
            )
        return sample

    # -- scoring -------------------------------------------------------------------------

    async def _score(self, messages: Sequence[ChatMessage], sample: _Sample) -> None:
        assert self.reward is not None
        try:
            if self.strategy.kind == "process_reward":
                steps = selection.split_steps(sample.content)
                if not steps:  # nothing to score: ranks below every scored sample
                    return
                result = await self.reward.step_scores(messages, steps)
                if len(result.scores) != len(steps):
                    raise RewardFailed(
                        "The reward model failed to score the answers.",
                        f"the process reward model gave {len(result.scores)} scores "
                        f"for {len(steps)} steps",
                    )
                sample.step_scores = tuple(result.scores)
                sample.score = selection.aggregate(result.scores, self.strategy.aggregate)
                tokens = result.tokens
            else:
                scored = await self.reward.score(messages, sample.content)
                sample.score = scored.score
                tokens = scored.tokens
        except RewardFailed:
            raise
        except ProviderError as err:
            raise RewardFailed(
                "The reward model failed to score the answers.", err.detail or str(err)
            ) from err
        except Exception as err:  # a reward client's bug or an unexpected reply: say what
            log.exception("reward model call failed")
            raise RewardFailed(
                "The reward model failed to score the answers.", f"{type(err).__name__}: {err}"
            ) from err
        sample.reward = Usage(samples=0, reward_calls=1, reward_tokens=tokens)

    # -- choosing ------------------------------------------------------------------------

    def _choose(self, live: list[_Sample]) -> int:
        kind = self.strategy.kind
        if kind in ("self_consistency", "weighted_vote"):
            for s in live:
                found = selection.extract_answer(s.content)
                s.extracted = selection.normalise_answer(found) if found is not None else None
            answers = [s.extracted for s in live]
            if kind == "weighted_vote":
                return selection.weighted_vote(answers, [_or_nan(s.score) for s in live])
            scores = [_or_nan(s.score) for s in live] if self.reward is not None else None
            return selection.majority(answers, scores)
        return selection.best_index([_or_nan(s.score) for s in live])

    # -- the stream ----------------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        tasks: list[asyncio.Task[Any]] = []
        try:
            requests = self._requests(request)
            n = len(requests)
            tasks = [asyncio.ensure_future(self._sample(r)) for r in requests]
            yield Chunk(progress=f"sampling 0/{n}")
            async for done in _as_done(tasks):
                yield Chunk(progress=f"sampling {done}/{n}")
            samples: list[_Sample] = [t.result() for t in tasks]
            short = next((s.error for s in samples if isinstance(s.error, _CAPACITY)), None)
            if short is not None:
                # No room for every sample: a "best of 8" chosen from 2 would be rated as best
                # of 8. The side fails instead, and says the model is busy (review of issue 7).
                log.warning(
                    "%s: a sample found no room (%s); the answer fails", self.strategy.kind, short
                )
                raise short
            live = [s for s in samples if s.error is None]
            if not live:
                first = samples[0].error
                assert first is not None
                raise first
            if self.reward is not None:
                m = len(live)
                tasks = [asyncio.ensure_future(self._score(request.messages, s)) for s in live]
                yield Chunk(progress=f"scoring 0/{m}")
                async for done in _as_done(tasks):
                    yield Chunk(progress=f"scoring {done}/{m}")
            chosen = live[self._choose(live)]
            total = NO_USAGE
            candidates = []
            for s in samples:
                own = (s.usage or NO_USAGE) + s.reward
                total += own
                candidates.append(
                    Candidate(
                        content=s.content,
                        reasoning=s.reasoning or None,
                        score=s.score,
                        chosen=s is chosen,
                        usage=own,
                        endpoint=s.endpoint,
                        extracted=s.extracted,
                        step_scores=s.step_scores,
                        error=str(s.error) if s.error is not None else None,
                    )
                )
            if chosen.reasoning:
                yield Chunk(reasoning=chosen.reasoning)
            yield Chunk(content=chosen.content)
            if chosen.endpoint:
                yield Chunk(endpoint=chosen.endpoint)
            yield Chunk(usage=total)
            yield Chunk(candidates=tuple(candidates))
            if chosen.finish_reason:
                yield Chunk(finish_reason=chosen.finish_reason)
        finally:
            # The consumer stopped (closed us, or was cancelled), or a sample or the reward
            # model failed: no sample or reward call outlives this answer.
            await _cancel(tasks)


def _or_nan(score: float | None) -> float:
    """An unscored sample (no steps to score) ranks below every scored one."""
    return math.nan if score is None else score


async def _as_done(tasks: Sequence[asyncio.Task[Any]]) -> AsyncIterator[int]:
    """Yield 1, 2, … as `tasks` finish, one count per task (several finishing at once give
    several counts); raise the error of the first one that failed (the caller's `finally`
    cancels the rest)."""
    pending: set[asyncio.Task[Any]] = set(tasks)
    finished = 0
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in sorted(done, key=tasks.index):
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
            finished += 1
            yield finished


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:  # retrieved, so asyncio does not log "exception was never retrieved"
        if t.done() and not t.cancelled():
            t.exception()


__all__ = [
    "NEEDS_REWARD",
    "RewardFailed",
    "Scorer",
    "StrategyProvider",
]
