"""Benchmark: the identity-leak check each streamed answer pays (arena/leaks.py).

The battle service feeds each side's text to a scanner at every UI update (about 20 per
answer) and once more at the end. Usage: python -m bench.leaks
"""

from __future__ import annotations

import time

from arena.leaks import BUILTIN_TERMS, rules_for

ANSWER = (
    "## Overview of recursion\n\nLet me walk through **recursion** step by step. A function "
    "calls itself on a smaller input until it reaches a base case; the metadata of each call "
    "lives on the stack.\n\n"
) * 16
NAMES = [f"model-{i}" for i in range(40)] + [f"Lab {i}" for i in range(10)]


def per_answer(text: str, updates: int, rounds: int) -> float:
    rules = rules_for(NAMES)
    step = max(1, len(text) // updates)
    start = time.perf_counter()
    for _ in range(rounds):
        scanner = rules.scanner()
        for end in range(step, len(text) + 1, step):
            scanner.feed(text[:end])
        scanner.feed(text, final=True)
    return (time.perf_counter() - start) / rounds


def main() -> None:
    start = time.perf_counter()
    rules = rules_for(NAMES)
    built = time.perf_counter() - start
    print(
        f"rules for {len(NAMES)} registry names + {len(BUILTIN_TERMS)} built-in terms: "
        f"compiled in {built * 1000:.1f} ms (once per registry)"
    )
    for label, text in (
        ("ASCII answer", ANSWER),
        ("answer with non-ASCII text", ANSWER.replace("recursion", "récursion ✓")),
        ("answer that leaks", ANSWER + "I am Claude, made by Anthropic."),
    ):
        seconds = per_answer(text, updates=20, rounds=200)
        print(f"{label}: {len(text):,} characters, 20 updates: {seconds * 1000:.2f} ms per answer")
    assert rules.find("I am Claude") == {"Claude"}


if __name__ == "__main__":
    main()
