"""Style counts of an answer, for style control (LMSYS, "Does style matter?", Aug 2024).

Counted as FastChat counts them for its public style-control data: markdown headers (lines
starting with one to six #), list items (lines starting with -, *, + or a number and a dot) and
bold spans (**x** or __x__), outside code fences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_HEADER = re.compile(r"^#{1,6} ", re.MULTILINE)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+\.)\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


@dataclass(frozen=True)
class AnswerStyle:
    """One answer's compute and style: what the leaderboard and style control need."""

    tokens: int  # completion tokens, reasoning included: the compute this answer cost
    length: int  # tokens of the visible answer
    headers: int
    lists: int
    bold: int


def estimate_tokens(text: str) -> int:
    """About four characters a token, for servers that report no usage."""
    return (len(text) + 3) // 4


def answer_style(
    content: str, completion_tokens: int | None = None, reasoning_tokens: int | None = None
) -> AnswerStyle:
    prose = _FENCE.sub("", content)
    length = estimate_tokens(content)
    if completion_tokens is not None:
        visible = completion_tokens - (reasoning_tokens or 0)
        length = visible if visible > 0 else length
    return AnswerStyle(
        tokens=completion_tokens if completion_tokens is not None else length,
        length=length,
        headers=len(_HEADER.findall(prose)),
        lists=len(_LIST.findall(prose)),
        bold=len(_BOLD.findall(prose)),
    )
