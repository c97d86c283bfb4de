"""Splitting <think> tags out of streamed content, wherever the chunks break."""

from __future__ import annotations

import pytest

from arena.providers.base import Chunk
from arena.providers.think import ThinkSplitter


def run(pieces: list[str]) -> tuple[str, str, int]:
    """Feed pieces as a client would; return (content, reasoning, retractions)."""
    splitter = ThinkSplitter()
    content = reasoning = ""
    retractions = 0
    chunks: list[Chunk] = []
    for piece in pieces:
        chunks.extend(splitter.feed(piece))
    chunks.extend(splitter.flush())
    for c in chunks:
        if c.retract_content:
            reasoning += content
            content = ""
            retractions += 1
        reasoning += c.reasoning
        content += c.content
    return content, reasoning, retractions


def every_split(text: str) -> list[list[str]]:
    return [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]


@pytest.mark.parametrize("pieces", every_split("<think>step one</think>\n\nThe answer."))
def test_tagged_reasoning_split_anywhere(pieces: list[str]) -> None:
    assert run(pieces) == ("The answer.", "step one", 0)


@pytest.mark.parametrize("pieces", every_split("step one, step two</think>The answer."))
def test_missing_opening_tag_moves_content_to_reasoning(pieces: list[str]) -> None:
    content, reasoning, retractions = run(pieces)
    assert (content, reasoning) == ("The answer.", "step one, step two")
    assert retractions == 1


@pytest.mark.parametrize("pieces", every_split("Plain answer with <b>html</b>."))
def test_plain_content_untouched(pieces: list[str]) -> None:
    assert run(pieces) == ("Plain answer with <b>html</b>.", "", 0)


@pytest.mark.parametrize("pieces", every_split("plan</think>\nDone."))
def test_opened_template_is_reasoning_from_the_start(pieces: list[str]) -> None:
    splitter = ThinkSplitter(opened=True)
    chunks = [c for p in pieces for c in splitter.feed(p)] + splitter.flush()
    assert not any(c.retract_content for c in chunks)
    assert "".join(c.reasoning for c in chunks) == "plan"
    assert "".join(c.content for c in chunks) == "Done."


def test_opened_template_tolerates_explicit_tag() -> None:
    splitter = ThinkSplitter(opened=True)
    chunks = splitter.feed("<think>plan</think>Done.") + splitter.flush()
    assert "".join(c.reasoning for c in chunks) == "plan"


def test_leading_whitespace_before_tag() -> None:
    assert run(["\n  <th", "ink>why</think>", "so"]) == ("so", "why", 0)


@pytest.mark.parametrize("pieces", every_split("Write <think>x</think> to mark it."))
def test_tags_in_mid_answer_are_content(pieces: list[str]) -> None:
    # An opening tag after the answer began means the answer is about tags.
    assert run(pieces) == ("Write <think>x</think> to mark it.", "", 0)


def test_unterminated_think_is_all_reasoning() -> None:
    assert run(["<think>still going"]) == ("", "still going", 0)


def test_partial_tag_at_end_is_flushed_as_content() -> None:
    assert run(["Answer </thi"]) == ("Answer </thi", "", 0)


def test_reasoning_field_disables_retraction() -> None:
    splitter = ThinkSplitter()
    out = splitter.feed("real answer ")
    splitter.disable_retract()
    out += splitter.feed("mentions </think> literally")
    out += splitter.flush()
    assert not any(c.retract_content for c in out)
    assert "".join(c.content for c in out) == "real answer mentions </think> literally"


def test_held_suffix_matches_its_definition() -> None:
    # The fast version looks only at "<" positions; the definition tries every suffix.
    import random

    from arena.providers.think import CLOSE, OPEN, _held_suffix

    def by_definition(text: str, tag: str) -> int:
        for n in range(min(len(tag) - 1, len(text)), 0, -1):
            if tag.startswith(text[-n:]):
                return n
        return 0

    rng = random.Random(7)
    for _ in range(20000):
        text = "".join(rng.choice("<>/thinkab ") for _ in range(rng.randint(0, 12)))
        for tag in (OPEN, CLOSE):
            assert _held_suffix(text, tag) == by_definition(text, tag), (text, tag)
