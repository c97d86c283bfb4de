"""The one seam between battles and model servers: `Provider.stream_chat`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class Chunk:
    """One parsed piece of a streamed answer.

    `retract_content` says the content received so far was really reasoning: a
    model whose chat template opens `<think>` in the prompt sends only `</think>`.
    """

    content: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    retract_content: bool = False


class Provider(Protocol):
    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Yield chunks of one answer; raise `arena.errors.ProviderError` on failure."""
        ...
