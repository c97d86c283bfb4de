"""arena.categories: the rule tagger, the hard-prompt criteria and language detection."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time

import pytest

from arena import categories
from arena.categories import (
    FIXED_CATEGORIES,
    HARD_CRITERIA,
    CategoryRules,
    RuleTagger,
    Tagger,
    Tags,
    detect_language,
)

TAGGER = RuleTagger()


def cats(prompt: str, tagger: RuleTagger = TAGGER) -> frozenset[str]:
    return tagger.tag(prompt).categories


# A detailed, multi-constraint technical task of the kind the public arena calls hard.
HARD_CODING_TASK = (
    "Write a Python function that merges overlapping intervals. The input is a list of "
    "(start, end) tuples that may be unsorted; return a new sorted list, do not mutate the "
    "input, and run in O(n log n) time. Handle empty input and intervals that only touch at "
    "endpoints. Include pytest unit tests."
)
HARD_SYSTEMS_TASK = (
    "Our production PostgreSQL database serves 5,000 requests per second and p99 latency "
    "jumped from 20 ms to 400 ms after we added a GIN index on a JSONB column. Explain how to "
    "diagnose the cause with EXPLAIN ANALYZE and pg_stat_statements, propose at least two "
    "fixes, and compare their trade-offs for write throughput. Assume PostgreSQL 16 and a "
    "budget of one extra replica."
)
HARD_DESIGN_TASK = (
    "Design a rate limiter for a public REST API used by 10k customers. Requirements: token "
    "bucket per API key, at most 100 requests per minute, must work across 8 stateless "
    "servers behind a load balancer, and should degrade gracefully if Redis is down. Give "
    "the data model, the algorithm, and pseudocode."
)
HARD_MATH_TASK = (
    "A factory produces bolts on three machines that make 50%, 30% and 20% of the output, "
    "with defect rates of 2%, 3% and 4%. A bolt chosen at random is defective. Calculate the "
    "probability that it came from the second machine, show every step with Bayes' theorem, "
    "and give the answer as an exact fraction. Then explain how the quality manager should "
    "use this result when planning inspections."
)
EASY = ["hi", "tell me a joke", "what is the capital of France", "What is the capital of France?"]


# --- the API ------------------------------------------------------------------------------


def test_fixed_categories_and_criteria():
    assert FIXED_CATEGORIES == ("coding", "math", "long", "multi_turn", "hard")
    assert len(HARD_CRITERIA) == 7
    assert {"specificity", "domain_knowledge", "problem_solving"} <= set(HARD_CRITERIA)


def test_rule_tagger_is_a_tagger_and_tags_are_frozen():
    assert isinstance(TAGGER, Tagger)
    tags = TAGGER.tag("Write a Python script that renames files")
    assert isinstance(tags, Tags)
    assert isinstance(tags.categories, frozenset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tags.language = "fr"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        categories.DEFAULT_RULES.long_prompt_chars = 5  # type: ignore[misc]


def test_tagger_never_says_multi_turn_and_only_known_categories():
    prompts = [*EASY, HARD_CODING_TASK, HARD_MATH_TASK, "x" * 5000, "```\nx=1\n```"]
    for prompt in prompts:
        found = cats(prompt)
        assert "multi_turn" not in found
        assert found <= {"coding", "math", "long", "hard"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"long_prompt_chars": 0},
        {"scan_chars": -1},
        {"language_scan_chars": 0},
        {"coding_min_weak_syntax": 0},
        {"math_min_weak_terms": 0},
        {"specificity_min_markers": 0},
        {"complexity_min_words": 0},
        {"complexity_min_parts": 0},
        {"language_min_words": 0},
        {"hard_min_criteria": 0},
        {"hard_min_criteria": 8},
        {"language_min_confidence": 1.5},
        {"language_min_confidence": -0.1},
        {"long_prompt_chars": True},
        {"long_prompt_chars": 10.5},
    ],
)
def test_rules_reject_nonsense(kwargs):
    with pytest.raises(ValueError):
        CategoryRules(**kwargs)


# --- coding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "Why does this fail?\n```python\nprint(1/0)\n```",
        "~~~\nls -la\n~~~",
        "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\nKeyError: 'x'",
        "I get a NullPointerException when I open the settings screen",
        "def area(r):\n    return 3.14 * r * r\nis this right?",
        "#include <stdio.h>\nint main() { return 0; }",
        "import numpy as np",
        "from collections import Counter\nwhat does this do",
        "SELECT name FROM users WHERE age > 30 is slow",
        "console.log(x) prints undefined, why?",
        "$ pip install torch fails on my laptop",
        "How do I center a div with CSS?",
        "Explain the difference between TypeScript interfaces and types",
        "What is a REST API?",
        "Write a function in Rust that reverses a string",
        "How do I read a CSV file in R?",
        "Why does my python script throw an error when I import pandas?",
        "Is C# better than Java for a game engine?",
        "In C, how do I use a pointer variable?",
        "Is std::format available in C++20?",
        "Explain move semantics in C++17",
        "Can you review my code? It feels slow.",
        "如何学习编程？",
        "写一个Python函数，计算斐波那契数列的第n项",
        "Python으로 함수를 만드는 방법",
        "It fails with `ValueError` when I call `parse_date()` on an empty string",
        "user.getName() returns null;\nwhy?",
    ],
)
def test_coding_positive(prompt):
    assert "coding" in cats(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "Is a python dangerous to humans? How long do pythons live in the wild?",
        "I love Java coffee in the morning, it has a great aroma.",
        "There is rust on my car door, how do I fix it?",
        "What's the dress code for a wedding?",
        "What is the zip code of Springfield?",
        "I want to play this sonata in C# minor",
        "The swift fox jumped over the lazy dog.",
        "Write a haiku about autumn rain",
        "Give me a recipe for ruby red grapefruit sorbet",
        "Recommend a rapid way to learn to paint",
        *EASY,
    ],
)
def test_coding_negative(prompt):
    assert "coding" not in cats(prompt)


def test_coding_weak_syntax_needs_two_kinds():
    one_kind = "Should I buy A or B? A -> cheaper, B -> faster"
    two_kinds = "Should I buy A or B? A -> cheaper;\nB -> faster;"
    assert "coding" not in cats(one_kind)
    assert "coding" in cats(two_kinds)
    lenient = RuleTagger(CategoryRules(coding_min_weak_syntax=1))
    assert "coding" in cats(one_kind, lenient)


# --- math ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "What is the integral of x^2 from 0 to 1?",
        "Solve for x: 2x + 3 = 11",
        "What is 17*23?",
        "What is 144 / 12?",
        "Simplify $\\frac{1}{2} + \\frac{1}{3}$",
        "Is ∑ 1/n² convergent?",
        "Prove that the square root of 2 is irrational.",
        "Calculate the area of a triangle with sides 3, 4 and 5",
        "The probability that it rains tomorrow is 30%. What is the chance it rains twice?",
        "Find the derivative of sin(x) * e^x",
        "If f(x) is even, what is f(-x)?",
        "If x = 5. What is y?",
        "I need help with linear algebra homework",
        "解这个方程：x 的平方等于 4",
    ],
)
def test_math_positive(prompt):
    assert "math" in cats(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "I work a 9 - 5 job and the 2014 - 2015 season was great",
        "We are open 24/7, call 555-1234",
        "What's the average price of a house in Boston?",
        "What do you mean? Sometimes I feel tired, plus I'm sad three times a day.",
        "It costs a fraction of the price",
        "```\nx = 1\ny = x + 2\n```\nwhat does this print?",
        "Write a haiku about autumn rain",
        *EASY,
    ],
)
def test_math_negative(prompt):
    assert "math" not in cats(prompt)


def test_math_everyday_words_need_two():
    assert "math" not in cats("What is the average price?")
    assert "math" in cats("What is the average and the median price?")
    strict = RuleTagger(CategoryRules(math_min_weak_terms=3))
    assert "math" not in cats("What is the average and the median price?", strict)


# --- long ---------------------------------------------------------------------------------


def test_long_boundary_default():
    limit = CategoryRules().long_prompt_chars
    assert limit == 2000
    assert "long" not in cats("a" * limit)
    assert "long" in cats("a" * (limit + 1))


def test_long_boundary_custom_and_counts_the_whole_prompt():
    tagger = RuleTagger(CategoryRules(long_prompt_chars=10, scan_chars=5))
    assert "long" not in cats("0123456789", tagger)
    assert "long" in cats("0123456789!", tagger)
    assert "long" in cats("hello " * 3, tagger)


# --- hard ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [*EASY, "Write a haiku about autumn rain", "ok", ""])
def test_easy_prompts_are_not_hard(prompt):
    assert "hard" not in cats(prompt)
    assert len(TAGGER.hard_criteria(prompt)) <= 1


@pytest.mark.parametrize(
    "prompt", [HARD_CODING_TASK, HARD_SYSTEMS_TASK, HARD_DESIGN_TASK, HARD_MATH_TASK]
)
def test_detailed_technical_tasks_are_hard(prompt):
    met = TAGGER.hard_criteria(prompt)
    assert {"specificity", "domain_knowledge", "problem_solving", "complexity"} <= met
    assert "hard" in cats(prompt)


def test_creative_but_not_technical_is_not_hard():
    prompt = (
        "Write a creative story about a dragon in 500 words with 3 chapters, each ending "
        "with a cliffhanger, set in medieval Japan."
    )
    met = TAGGER.hard_criteria(prompt)
    assert {"creativity", "specificity"} <= met
    assert "hard" not in cats(prompt)


@pytest.mark.parametrize(
    ("criterion", "yes", "no"),
    [
        # two of: a number, quotes/code, an output format, a constraint, an I/O spec
        ("specificity", "List 3 examples in a table", "Tell me about dogs"),
        ("specificity", 'Answer only with "yes" or "no"', "Answer me"),
        ("specificity", "Return the output as JSON", "Give me 3 jokes"),
        ("domain_knowledge", "Explain quantum entanglement", "Explain the rules of tennis"),
        ("domain_knowledge", "Fix this SQL query", "Fix my bike"),
        ("domain_knowledge", "What is the integral of x^2?", "What is your name?"),
        (
            "complexity",
            # 40+ words in three sentences of at least three words
            "I run a small bakery in a quiet town and sell bread every morning. "
            "Sales have dropped since a supermarket opened nearby last spring. "
            "I want to keep my regular customers and attract students from the "
            "college without lowering my prices too much.",
            # 40+ words but a single sentence
            "I run a small bakery in a quiet town and sell bread every morning and sales "
            "have dropped since a supermarket opened nearby last spring and I want to keep "
            "my regular customers and attract students from the college without lowering "
            "my prices too much",
        ),
        ("complexity", HARD_CODING_TASK, "Sort a list. Then print it. Then stop."),
        ("problem_solving", "How do I stop a leaking tap?", "What is a tap?"),
        ("problem_solving", "Please fix the leaking tap", "The tap is leaking"),
        ("problem_solving", "Write me a Python function for that", "Write me a poem"),
        ("problem_solving", "write an efficient SQL query", "I rewrote the query"),
        ("problem_solving", "Find the bug in this loop", "Who found America?"),
        ("problem_solving", "What’s wrong with my bike?", "What’s new?"),
        ("creativity", "Come up with a name for my cat", "Name a cat breed"),
        ("creativity", "Write a poem about rain", "Is it raining?"),
        ("technical_accuracy", "Keep the latency under 20 ms", "Keep it short"),
        ("technical_accuracy", "Sort it in O(n log n)", "Sort it quickly"),
        ("technical_accuracy", "Implement RFC 3339 date parsing", "Parse this date for me"),
        ("technical_accuracy", "What is 2+2?", "What is love?"),
        ("real_world", "Our customers complain about the checkout", "Unicorns complain"),
        ("real_world", "My boss wants a report", "The dragon wants gold"),
    ],
)
def test_each_hard_criterion(criterion, yes, no):
    assert criterion in TAGGER.hard_criteria(yes)
    assert criterion not in TAGGER.hard_criteria(no)


def test_hard_threshold_is_the_count_of_criteria():
    prompts = [
        *EASY,
        HARD_CODING_TASK,
        HARD_SYSTEMS_TASK,
        HARD_DESIGN_TASK,
        HARD_MATH_TASK,
        "List 3 examples in a table",
        "Write a creative story about a dragon in 500 words",
        "How do I fix this TypeError in my Django app? Our users see it in production.",
    ]
    for needed in range(1, len(HARD_CRITERIA) + 1):
        tagger = RuleTagger(CategoryRules(hard_min_criteria=needed))
        for prompt in prompts:
            met = tagger.hard_criteria(prompt)
            assert ("hard" in cats(prompt, tagger)) == (len(met) >= needed), (needed, prompt)


def test_hard_min_criteria_moves_the_line():
    met = TAGGER.hard_criteria(HARD_CODING_TASK)
    assert "hard" in cats(HARD_CODING_TASK, RuleTagger(CategoryRules(hard_min_criteria=len(met))))
    stricter = RuleTagger(CategoryRules(hard_min_criteria=len(met) + 1))
    assert "hard" not in cats(HARD_CODING_TASK, stricter)


# --- language -----------------------------------------------------------------------------

LANGUAGE_SAMPLES = {
    "en": ["How do I make sourdough bread at home?", "Recommend a good science fiction novel"],
    "zh": ["今天天气怎么样？", "请给我讲一个笑话", "帮我写一首关于春天的诗"],
    "es": ["¿Cómo puedo aprender inglés rápido?", "Escribe un poema sobre el mar"],
    "ru": ["Как быстро выучить английский язык?", "Посоветуй хорошую книгу"],
    "ja": ["日本の首都はどこですか？", "カレーの作り方を教えて"],
    "de": ["Erzähl mir einen Witz über Katzen", "Wie lerne ich schnell Englisch?"],
    "fr": ["Raconte-moi une blague sur les chats", "Pourquoi le ciel est-il bleu ?"],
    "ar": ["ما هي عاصمة مصر؟", "اكتب قصيدة عن البحر"],
    "pt": ["Qual é a capital do Brasil?", "Escreva um poema sobre o mar"],
    "ko": ["한국의 수도는 어디입니까?", "좋은 책을 추천해 주세요"],
}


@pytest.mark.parametrize(
    ("expected", "text"),
    [(lang, text) for lang, texts in LANGUAGE_SAMPLES.items() for text in texts],
)
def test_language_of_short_sentences(expected, text):
    assert detect_language(text) == expected
    assert TAGGER.tag(text).language == expected


def test_language_ignores_code_and_urls():
    prompt = "Warum funktioniert das nicht?\n```python\nfor item in items:\n    print(item)\n```"
    assert detect_language(prompt) == "de"
    assert detect_language("Was steht auf https://example.com/some/english/page ?") == "de"


def test_dialect_labels_become_iso_639_1():
    # py3langid calls this Cantonese ("yue"); ISO 639-1 has only the macrolanguage "zh"
    assert detect_language("你食咗飯未呀？我哋一齊去飲茶啦") == "zh"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "12345",
        "12 34 56",
        "```\nx=1\n```",
        "`x = 1`",
        "x",
        "ok",
        "hi",
        "???",
        "https://example.com",
        "someone@example.com",
        "3+4*2=?",
        "E=mc^2",
        "def f(x): return x+1",
        "SELECT * FROM t;",
        "Привет",
        "🙂🙂🙂",
    ],
)
def test_language_none_when_undetermined(text):
    assert detect_language(text) is None
    assert TAGGER.tag(text).language is None


def test_language_thresholds_are_rules():
    assert detect_language("谢谢") == "zh"
    assert detect_language("谢谢", CategoryRules(language_min_words=3)) is None
    text = "Good morning"  # too unsure for the default threshold
    assert detect_language(text) is None
    assert detect_language(text, CategoryRules(language_min_confidence=0.05)) == "en"


def test_language_model_is_loaded_once_under_concurrency(monkeypatch):
    from py3langid.langid import LanguageIdentifier

    loads = []
    real = LanguageIdentifier.from_model_file.__func__

    def counting(cls, *args, **kwargs):
        loads.append(1)
        time.sleep(0.05)  # widen the race window
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(categories, "_identifier", None)
    monkeypatch.setattr(LanguageIdentifier, "from_model_file", classmethod(counting))
    results: list[str | None] = []
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        results.append(detect_language("Wie lerne ich schnell Englisch?"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [1]
    assert results == ["de"] * 8


# --- determinism and speed ----------------------------------------------------------------

DETERMINISM_PROMPTS = [
    *EASY,
    HARD_CODING_TASK,
    HARD_MATH_TASK,
    *(text for texts in LANGUAGE_SAMPLES.values() for text in texts),
    "Explain quantum entanglement simply",
    "Hi there",
]


def _as_json(prompts: list[str]) -> str:
    tags = [TAGGER.tag(p) for p in prompts]
    return json.dumps([[sorted(t.categories), t.language] for t in tags])


def test_deterministic_within_and_across_processes():
    here = _as_json(DETERMINISM_PROMPTS)
    assert here == _as_json(DETERMINISM_PROMPTS)
    script = (
        "import json, sys\n"
        "from arena.categories import RuleTagger\n"
        "prompts = json.load(sys.stdin)\n"
        "tags = [RuleTagger().tag(p) for p in prompts]\n"
        "print(json.dumps([[sorted(t.categories), t.language] for t in tags]))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(DETERMINISM_PROMPTS),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert other == here


def test_huge_prompt_reads_only_scan_chars():
    """Every rule but `long` reads only the first `scan_chars` characters, so a huge prompt
    costs what its head costs (speed: `python -m bench.categories`)."""
    filler = "tell me a story about the sea " * (TAGGER.rules.scan_chars // 30 + 1)
    tail = " Solve for x: 3x + 7 = 22, then prove the integral of x^2 dx is x^3/3. ```python\n"
    tags = TAGGER.tag(filler + tail * 1000)
    assert "long" in tags.categories
    assert "math" not in tags.categories and "coding" not in tags.categories
    assert "math" in TAGGER.tag(tail).categories  # the tail alone is tagged
