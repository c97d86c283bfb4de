"""Every TOML example in docs/models.md parses as a registry (issue 7, §7).

Each ```toml block must hold at least one [[models]] entry of its own. The test adds two dummy
models (a registry needs two drawable ones), sets every environment variable an `api_key_env`
names, and runs the result through `arena.config.parse_config`, the parser `arena serve` uses.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arena.config import ArenaConfig, parse_config
from arena.providers.anthropic import request_body
from arena.providers.base import ChatMessage, ChatRequest
from arena.router import request_params

DOC = Path(__file__).resolve().parent.parent / "docs" / "models.md"
FENCE = re.compile(r"^```toml[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
DUMMIES = [
    {"name": "docs-dummy-a", "endpoints": [{"base_url": "http://127.0.0.1:9/v1", "model": "a"}]},
    {"name": "docs-dummy-b", "endpoints": [{"base_url": "http://127.0.0.1:9/v1", "model": "b"}]},
]
STRATEGY_KINDS = {"best_of_n", "process_reward", "self_consistency", "weighted_vote"}


def toml_blocks() -> list[tuple[int, str]]:
    """(line number, text) of every ```toml block in docs/models.md."""
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = toml_blocks()


def key_variables(value: Any) -> Iterator[str]:
    """Every environment variable named by an `api_key_env`, however deeply nested."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "api_key_env" and isinstance(inner, str):
                yield inner
            else:
                yield from key_variables(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from key_variables(inner)


def parse_block(text: str, line: int, monkeypatch: pytest.MonkeyPatch) -> ArenaConfig:
    data = tomllib.loads(text)
    models = data.get("models")
    assert isinstance(models, list) and models, (
        f"docs/models.md:{line}: the example has no [[models]] entry of its own"
    )
    for name in key_variables(data):
        monkeypatch.setenv(name, "test-key-not-real")
    data["models"] = [*models, *DUMMIES]
    return parse_config(data, source=f"docs/models.md:{line}")


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=[f"line-{n}" for n, _ in BLOCKS])
def test_example_parses(line: int, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_block(text, line, monkeypatch)
    for entry in config.models:
        request_params(entry)  # the request body's extras can be built for every entry


def test_examples_cover_every_strategy_and_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: set[str] = set()
    apis: set[str] = set()
    for line, text in BLOCKS:
        for entry in parse_block(text, line, monkeypatch).models:
            apis.add(entry.api)
            if entry.strategy is not None:
                kinds.add(entry.strategy.kind)
    assert kinds == STRATEGY_KINDS
    assert "anthropic" in apis


def test_thinking_budgets_in_the_examples_reach_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each example budget lands where its server reads it."""
    sent: dict[str, dict[str, Any]] = {}
    for line, text in BLOCKS:
        for entry in parse_block(text, line, monkeypatch).models:
            if entry.thinking_budget is not None:
                sent[entry.name] = request_params(entry)
    assert sent["qwen3-32b-think-1k"]["thinking_token_budget"] == 1024
    assert sent["qwen3-32b-sglang-think-2k"]["custom_params"] == {"thinking_budget": 2048}
    assert sent["qwen3-8b-gguf-think-512"]["thinking_budget_tokens"] == 512
    assert sent["claude-sonnet-4.6-think-8k"]["thinking_budget"] == 8000


def test_claude_effort_example_asks_for_adaptive_thinking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example for Claude 4.7 and later reaches Anthropic as adaptive thinking, the only
    kind those models accept."""
    bodies = {}
    for line, text in BLOCKS:
        for entry in parse_block(text, line, monkeypatch).models:
            if entry.api == "anthropic":
                request = ChatRequest((ChatMessage("user", "hi"),), request_params(entry))
                bodies[entry.name] = request_body(entry.endpoints[0].model, request)
    body = bodies["claude-opus-4.7-effort-low"]
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "low"}
    assert body["thinking"] != bodies["claude-sonnet-4.6-think-8k"]["thinking"]
