"""Split `<think>…</think>` out of streamed content, across arbitrary chunk borders.

Models served without a reasoning parser put their reasoning inside the content.
Some chat templates (DeepSeek-R1, QwQ) already open `<think>` in the prompt, so the
answer carries only the closing tag: then everything before it was reasoning.
"""

from __future__ import annotations

from enum import Enum

from arena.providers.base import Chunk

OPEN = "<think>"
CLOSE = "</think>"


class _State(Enum):
    START = "start"  # nothing but whitespace seen yet
    THINKING = "thinking"  # inside <think>
    UNTAGGED = "untagged"  # content with no opening tag: a lone </think> retracts it
    AFTER = "after"  # past the reasoning, or reasoning ruled out: plain content


def _held_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`. Both tags start
    with "<", so only a suffix starting at a "<" can be one: a text with none near its end (the
    common case, once per streamed token) is settled by one `find` (bench.router, issue 7)."""
    i = text.find("<", max(0, len(text) - len(tag) + 1))
    while i >= 0:
        if tag.startswith(text[i:]):
            return len(text) - i
        i = text.find("<", i + 1)
    return 0


class ThinkSplitter:
    """`opened=True`: the chat template already opened `<think>` (DeepSeek-R1, QwQ), so
    the answer is reasoning until `</think>`. Otherwise reasoning is recognised when the
    answer opens with `<think>`, or after the fact when a lone `</think>` arrives."""

    def __init__(self, opened: bool = False) -> None:
        self._opened = opened
        self._state = _State.START
        self._buffer = ""
        self._strip = False  # drop whitespace between </think> and the answer

    def disable_retract(self) -> None:
        """Reasoning came in its own field, so content is content."""
        if self._state is _State.UNTAGGED:
            self._state = _State.AFTER

    def feed(self, text: str) -> list[Chunk]:
        self._buffer += text
        out: list[Chunk] = []
        while self._buffer:
            if self._state is _State.START:
                stripped = self._buffer.lstrip()
                if not stripped:
                    return out
                if stripped.startswith(OPEN):
                    self._buffer = stripped[len(OPEN) :]
                    self._state = _State.THINKING
                elif OPEN.startswith(stripped):
                    return out  # could still become "<think>"
                else:
                    self._state = _State.THINKING if self._opened else _State.UNTAGGED
            elif self._state is _State.THINKING:
                end = self._buffer.find(CLOSE)
                if end >= 0:
                    if end:
                        out.append(Chunk(reasoning=self._buffer[:end]))
                    self._buffer = self._buffer[end + len(CLOSE) :]
                    self._state, self._strip = _State.AFTER, True
                    continue
                keep = _held_suffix(self._buffer, CLOSE)
                emit = self._buffer[: len(self._buffer) - keep]
                if emit:
                    out.append(Chunk(reasoning=emit))
                self._buffer = self._buffer[len(emit) :]
                return out
            elif self._state is _State.UNTAGGED:
                end = self._buffer.find(CLOSE)
                opened = self._buffer.find(OPEN)
                if opened >= 0 and (end < 0 or opened < end):
                    # Content that opens a tag mid-answer is talking about tags.
                    self._state = _State.AFTER
                    continue
                if end >= 0:
                    out.append(Chunk(reasoning=self._buffer[:end], retract_content=True))
                    self._buffer = self._buffer[end + len(CLOSE) :]
                    self._state, self._strip = _State.AFTER, True
                    continue
                keep = max(_held_suffix(self._buffer, CLOSE), _held_suffix(self._buffer, OPEN))
                emit = self._buffer[: len(self._buffer) - keep]
                if emit:
                    out.append(Chunk(content=emit))
                self._buffer = self._buffer[len(emit) :]
                return out
            else:
                if self._strip:
                    self._buffer = self._buffer.lstrip()
                    if not self._buffer:
                        return out
                    self._strip = False
                out.append(Chunk(content=self._buffer))
                self._buffer = ""
        return out

    def flush(self) -> list[Chunk]:
        """End of stream: whatever is held back was not a tag after all."""
        text, self._buffer = self._buffer, ""
        if not text:
            return []
        if self._state is _State.THINKING:
            return [Chunk(reasoning=text)]
        if self._state is not _State.UNTAGGED and not text.strip():
            return []
        return [Chunk(content=text)]
