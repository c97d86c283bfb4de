"""One side's answer to one turn: the value the battle builds while it streams, the store
writes as a row, and the reveal reads back (issue 7: it was described three times before)."""

from __future__ import annotations

from dataclasses import dataclass

from arena.answer_style import estimate_tokens
from arena.providers.base import Candidate, Usage

__all__ = ["Answer", "Candidate", "Usage", "compute_tokens"]


@dataclass(frozen=True)
class Answer:
    model: str
    content: str
    reasoning: str | None = None
    # Summed over every sample and reward-model call; None when the server reported nothing.
    usage: Usage | None = None
    ttft_ms: float | None = None  # first token of any kind, reasoning included
    answer_ms: float | None = None  # first token of the answer proper: the time to answer
    duration_ms: float | None = None
    finish_reason: str | None = None
    error: str | None = None  # as the voter sees it
    error_detail: str | None = None  # what the server said: for the operator only
    endpoint: str | None = None  # the replica that served it (`base_url#model`)
    candidates: tuple[Candidate, ...] = ()  # a strategy's samples, the chosen one marked

    @property
    def prompt_tokens(self) -> int | None:
        return self.usage.prompt_tokens if self.usage else None

    @property
    def completion_tokens(self) -> int | None:
        return self.usage.completion_tokens if self.usage else None

    @property
    def reasoning_tokens(self) -> int | None:
        return self.usage.reasoning_tokens if self.usage else None


def compute_tokens(answer: Answer) -> int:
    """The tokens an answer cost, for the leaderboard's rating-against-compute chart: every
    sample's completion tokens (reasoning included) and every token a reward model read. The
    prompt's own tokens are left out: the voter chose them, the same for both sides."""
    usage = answer.usage
    if usage is None:
        return estimate_tokens(answer.content) + estimate_tokens(answer.reasoning or "")
    return usage.completion_tokens + usage.reward_tokens
