"""Benchmark: category tagging per prompt, the cost every stored battle pays.

Usage: python -m bench.categories
"""

from __future__ import annotations

import time

from arena.categories import RuleTagger

PROMPTS = [
    "hi",
    "What is the capital of France?",
    "Write a Python function that merges overlapping intervals and explain its complexity.",
    "Prove that the square root of 2 is irrational.",
    "¿Cuál es la mejor manera de aprender a programar en Rust?",
    "用一句话解释量子纠缠。",
    "Design a rate limiter for a multi-tenant API gateway handling 50k requests per second, "
    "with per-tenant quotas, burst allowances and a Redis-backed store; give the data model, "
    "the algorithm, failure modes and how you would test it under load.",
]


def main() -> None:
    tagger = RuleTagger()
    start = time.perf_counter()
    tagger.tag("warm up the language model")
    print(f"first call (loads the language model): {time.perf_counter() - start:.2f} s")
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        for prompt in PROMPTS:
            tagger.tag(prompt)
    per_call = (time.perf_counter() - start) / (rounds * len(PROMPTS))
    print(f"typical prompts: {per_call * 1000:.3f} ms per call ({len(PROMPTS)} prompts)")
    huge = PROMPTS[-1] * 1500  # about 380,000 characters; only scan_chars are read
    start = time.perf_counter()
    for _ in range(10):
        tagger.tag(huge)
    print(
        f"a {len(huge):,}-character prompt: {(time.perf_counter() - start) * 100:.1f} ms per call"
    )


if __name__ == "__main__":
    main()
