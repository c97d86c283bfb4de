"""The one seam between battles and model servers: `Provider.stream_chat`.

Everything that reaches a model is a `Provider`: one endpoint's adapter (OpenAI-compatible,
Anthropic), a pool of replicas wrapping adapters, a test-time-compute strategy wrapping a pool,
the way httpx transports wrap one another (issue 7).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]
# Where a reasoning token count came from: the server's usage, or counted by us from the text.
ReasoningSource = Literal["server", "counted"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """The compute one answer cost, summed over every sample and reward-model call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning included, as servers count it
    reasoning_tokens: int | None = None
    samples: int = 1
    reward_calls: int = 0
    reward_tokens: int = 0
    reasoning_source: ReasoningSource | None = None

    def __add__(self, other: Usage) -> Usage:
        reasoning = None
        if self.reasoning_tokens is not None or other.reasoning_tokens is not None:
            reasoning = (self.reasoning_tokens or 0) + (other.reasoning_tokens or 0)
        sources = {s for s in (self.reasoning_source, other.reasoning_source) if s}
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            reasoning_tokens=reasoning,
            samples=self.samples + other.samples,
            reward_calls=self.reward_calls + other.reward_calls,
            reward_tokens=self.reward_tokens + other.reward_tokens,
            # One counted sample makes the sum partly counted: say so.
            reasoning_source="counted"
            if "counted" in sources
            else (sources.pop() if sources else None),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "reasoning_source": self.reasoning_source,
            "samples": self.samples,
            "reward_calls": self.reward_calls,
            "reward_tokens": self.reward_tokens,
        }


@dataclass(frozen=True)
class Candidate:
    """One sample among several, when a strategy chose a side's answer from N."""

    content: str
    reasoning: str | None = None
    score: float | None = None  # the reward (or aggregated step reward) it got
    chosen: bool = False
    usage: Usage | None = None
    endpoint: str | None = None
    extracted: str | None = None  # self-consistency: its final answer, normalised
    step_scores: tuple[float, ...] | None = None  # process reward: one score per step
    error: str | None = None  # a sample that failed (the others may still carry the answer)


@dataclass(frozen=True)
class Chunk:
    """One parsed piece of a streamed answer.

    `retract_content` says the content received so far was really reasoning: a
    model whose chat template opens `<think>` in the prompt sends only `</think>`.
    `endpoint` names the replica serving the answer (a later one replaces it: a retry).
    `progress` is a strategy's word on its work ("sampling 5/16"); `candidates` are the
    samples a strategy chose among, sent once, with the chosen answer.
    """

    content: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    retract_content: bool = False
    endpoint: str | None = None
    progress: str | None = None
    candidates: tuple[Candidate, ...] = ()


class Provider(Protocol):
    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Yield chunks of one answer; raise `arena.errors.ProviderError` on failure."""
        ...
