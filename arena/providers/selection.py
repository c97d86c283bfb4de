"""Choosing one answer among N samples: pure functions, no I/O (issue 7, §4).

`arena.providers.strategies` draws the samples and calls the reward model; everything that
decides which sample wins is here, so that the rules can be read and tested on their own.

Tie rules, everywhere in this module: the higher score wins; among equal scores (or equal
vote counts) the candidate, or the answer, that came first in the list wins. A NaN score
ranks below every number. Nothing here depends on timing or on a random draw, so the
same samples and scores always choose the same answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

Aggregate = Literal["product", "min", "last"]


# -- extracting a final answer -------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(
    r"^\s*(?:[*_]{1,2})?(?:final\s+)?answer\s*(?:[*_]{1,2})?\s*[:：]\s*(?:[*_]{1,2})?\s*(.*?)\s*$",
    re.IGNORECASE,
)


def _balanced(text: str, start: int) -> str | None:
    """The text between the `{` just before `start` and its matching `}`; None if the braces
    never balance (an answer cut off mid-box)."""
    depth = 1
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            i += 2  # an escaped brace, \{ or \}, is a character, not a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def extract_answer(text: str) -> str | None:
    """A solution's final answer, as written (normalise it with `normalise_answer`).

    In order:

    1. The last `\\boxed{…}` (or `\\fbox{…}`), braces balanced so that
       `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`: the convention of the MATH benchmark
       (Hendrycks et al. 2021, "Measuring Mathematical Problem Solving With the MATH
       Dataset"; its `last_boxed_only_string` takes the last box), which math models such
       as Qwen2.5-Math are trained to follow.
    2. Else the last line starting "Answer:" or "Final answer:" (any case, markdown bold
       allowed, e.g. `**Final Answer:** 42`): the answer line of the Minerva prompt
       format (Lewkowycz et al. 2022) and of lm-evaluation-harness's math tasks.
    3. Else the last non-empty line, stripped: our own fallback, so that a short answer
       with no marker still votes (self-consistency, Wang et al. 2022, compares final
       answers however they are marked).

    None when the text has no non-empty line at all.
    """
    boxes = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(boxes):
        inside = _balanced(text, start)
        if inside is not None:
            return inside.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ANSWER_LINE.match(line)
        if match and match.group(1).strip("*_ "):
            return match.group(1).strip("*_ ").strip()
    if lines:
        return lines[-1].strip()
    return None


# -- normalising it ------------------------------------------------------------------------

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_INT = r"[+-]?\d+"
_LATEX_FRAC = re.compile(rf"(-?)\\[dt]?frac\s*\{{\s*({_INT})\s*\}}\s*\{{\s*({_INT})\s*\}}")
_SHORT_FRAC = re.compile(r"(-?)\\[dt]?frac(\d)(\d)")  # \frac12, as LaTeX allows
_SLASH_FRAC = re.compile(rf"({_INT})\s*/\s*({_INT})")


def _number(text: str) -> str:
    """A decimal number in one form: no sign for positives, no trailing zeros, no exponent
    ("+3" → "3", "0.50" → "0.5", "2.0" → "2", ".5" → "0.5", "-0" → "0")."""
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - _NUMBER only lets numbers through
        return text
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _fraction(sign: str, numerator: str, denominator: str) -> str:
    num, den = _number(numerator), _number(denominator)
    if sign == "-":
        num = num[1:] if num.startswith("-") else "-" + num
    return f"{num}/{den}"


def normalise_answer(text: str) -> str:
    """One spelling for answers that only differ in form, for voting.

    A conservative subset of the MATH benchmark's `_strip_string` (Hendrycks et al. 2021)
    and of the answer cleaning in lm-evaluation-harness's GSM8K task: remove `$` and
    `\\text{…}`-style wrappers (`\\text`, `\\textbf`, `\\textrm`, `\\mathrm`), surrounding
    spaces and one trailing period; collapse runs of spaces; drop thousands separators from
    a number ("1,000" → "1000"; "1,2" is left alone: it may be a pair); write a number in
    one form ("0.50" → "0.5", "2.0" → "2", "+3" → "3"); write a simple fraction of
    integers as `a/b` (`\\frac{1}{2}`, `\\dfrac{1}{2}`, `\\frac12` and `1 / 2` all become
    "1/2"); lowercase.

    Deliberately not done, since a grader could tell the answers apart: reducing fractions
    ("2/4" stays), turning fractions into decimals ("1/2" is not "0.5"), dropping units or
    a leading "x =".
    """
    s = text.strip()
    previous = None
    while previous != s:  # \text{\textbf{A}}: unwrap from the inside out
        previous = s
        s = _TEXT_WRAPPER.sub(r"\1", s)
    s = s.replace("$", "")
    s = " ".join(s.split())
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _NUMBER.fullmatch(s):
        s = _number(s)
    else:
        s = _LATEX_FRAC.sub(lambda m: _fraction(m[1], m[2], m[3]), s)
        s = _SHORT_FRAC.sub(lambda m: _fraction(m[1], m[2], m[3]), s)
        s = _SLASH_FRAC.sub(lambda m: _fraction("", m[1], m[2]), s)
    return s.lower()


# -- process reward: steps and their scores ------------------------------------------------

_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def split_steps(text: str) -> list[str]:
    """A solution's steps: split at blank lines (one or more lines empty or only spaces and
    tabs), each stripped, empty ones dropped.

    Process reward models score one step per paragraph: Qwen2.5-Math-PRM's model card
    splits a solution at "\\n\\n" (and so does vLLM's example for it), as does Math-Shepherd
    (Wang et al. 2023) with its step tags.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [step.strip() for step in _BLANK_LINES.split(text) if step.strip()]


def aggregate(step_scores: Sequence[float], how: Aggregate) -> float:
    """One score for a solution from its steps' scores.

    - "product": the probability that every step is correct, as in Lightman et al. 2023,
      "Let's Verify Step by Step" (the PRM's score of a solution is the product of its
      steps' probabilities of being correct).
    - "min": the weakest step, as in Math-Shepherd (Wang et al. 2023) and the PRM
      comparisons of Snell et al. 2024.
    - "last": the last step's score, which Snell et al. 2024 ("Scaling LLM Test-Time
      Compute Optimally…") found worked best for their PRM.
    """
    if not step_scores:
        raise ValueError("aggregate needs at least one step score (the solution had no steps)")
    if how == "product":
        return math.prod(step_scores)
    if how == "min":
        return min(step_scores)
    if how == "last":
        return step_scores[-1]
    raise ValueError(f"unknown aggregate {how!r}: expected 'product', 'min' or 'last'")


# -- choosing ------------------------------------------------------------------------------


def _rank(score: float) -> float:
    """A score as a sort key: NaN below everything."""
    return -math.inf if math.isnan(score) else score


def best_index(scores: Sequence[float]) -> int:
    """The index of the highest score (best-of-N with an outcome reward model, Cobbe et al.
    2021, "Training Verifiers to Solve Math Word Problems"; and with an aggregated process
    reward, Lightman et al. 2023). Ties: the first index. NaN ranks lowest."""
    if not scores:
        raise ValueError("best_index needs at least one score")
    best = 0
    for i, score in enumerate(scores):
        if _rank(score) > _rank(scores[best]):
            best = i
    return best


def _groups(answers: Sequence[str | None]) -> dict[str | None, list[int]]:
    """Candidate indices by answer, in order of each answer's first occurrence."""
    groups: dict[str | None, list[int]] = {}
    for i, answer in enumerate(answers):
        groups.setdefault(answer, []).append(i)
    return groups


def _representative(members: list[int], scores: Sequence[float] | None) -> int:
    """The winning answer's candidate: its highest-scored one, else its first."""
    if scores is None:
        return members[0]
    return members[best_index([scores[i] for i in members])]


def _check(answers: Sequence[str | None], scores: Sequence[float] | None) -> None:
    if not answers:
        raise ValueError("there are no candidates to choose from")
    if scores is not None and len(scores) != len(answers):
        raise ValueError(f"{len(scores)} scores for {len(answers)} answers")


def majority(answers: Sequence[str | None], tie_scores: Sequence[float] | None = None) -> int:
    """Self-consistency (Wang et al. 2022, "Self-Consistency Improves Chain of Thought
    Reasoning in Language Models"): the answer most candidates reached.

    `answers` are the candidates' final answers, already normalised (`extract_answer` then
    `normalise_answer`), compared as strings; None is a candidate without an answer, which
    wins only when no candidate has one. Returns the index of the candidate that stands for
    the winning answer.

    Ties between answers with as many votes: with `tie_scores` (one reward score per
    candidate), the answer whose candidates' scores sum highest wins; then, and without
    scores, the answer that occurred first. The representative: with `tie_scores`, the
    winning answer's highest-scored candidate (the first of equals); without, its first
    candidate.
    """
    _check(answers, tie_scores)
    groups = _groups(answers)
    if len(groups) > 1:
        groups.pop(None, None)

    def key(item: tuple[str | None, list[int]]) -> tuple[int, float]:
        members = item[1]
        summed = sum(tie_scores[i] for i in members) if tie_scores is not None else 0.0
        return len(members), _rank(summed)

    # max() keeps the first of equal keys: the answer that occurred first.
    _, members = max(groups.items(), key=key)
    return _representative(members, tie_scores)


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float]) -> int:
    """Reward-weighted majority voting (Uesato et al. 2022, "Solving math word problems
    with process- and outcome-based feedback"; Li et al. 2023, DiVeRSe): the answer whose
    candidates' reward scores sum highest.

    `answers` as for `majority` (normalised; None wins only when no candidate has an
    answer). Scores are summed as given, so they should be non-negative (probabilities) for
    the sum to weigh votes. Ties: the answer that occurred first. Returns the winning
    answer's highest-scored candidate (the first of equals).
    """
    _check(answers, scores)
    groups = _groups(answers)
    if len(groups) > 1:
        groups.pop(None, None)
    _, members = max(groups.items(), key=lambda item: _rank(sum(scores[i] for i in item[1])))
    return _representative(members, scores)
