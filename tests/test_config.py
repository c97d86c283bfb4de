"""The registry file: a good one loads, every bad one fails with file, entry and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arena.config import Settings, load_config, parse_config
from arena.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[arena]
title = "T"
max_turns = 2

[[models]]
name = "one"
endpoints = [{ base_url = "http://127.0.0.1:1/v1", model = "m1" }]

[[models]]
name = "two"
weight = 2
unreleased = true
params = { temperature = 0.5, max_tokens = 100 }
endpoints = [
  { base_url = "http://127.0.0.1:1/v1/", model = "m2", api_key_env = "TWO_API_KEY" },
  { base_url = "https://gpu-2.example/v1", model = "m2" },
]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "arena.toml"
    path.write_text(text)
    return path


def test_shipped_config_loads() -> None:
    config = load_config(ROOT / "arena" / "demo.toml")
    assert len(config.models) >= 4 and config.demo


def test_good_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), environ={"TWO_API_KEY": "sk-abc"})
    two = config.model("two")
    assert two.weight == 2 and two.unreleased and two.params["max_tokens"] == 100
    assert two.endpoints[0].base_url == "http://127.0.0.1:1/v1"  # trailing slash dropped
    assert two.endpoints[0].api_key is not None
    assert "sk-abc" not in repr(config) and "sk-abc" not in str(two.endpoints[0])


BAD = [
    ('name = "one"', "name = 5", "models[0]", "'name'", "must be a string"),
    ("max_turns = 2", "max_turns = 0", "[arena]", "'max_turns'", "at least 1"),
    ("max_turns = 2", "max_turn = 2", "[arena]", "'max_turn'", "unknown field"),
    ("weight = 2", 'weight = "heavy"', "models[1] ('two')", "'weight'", "must be a number"),
    ("weight = 2", "weight = -1", "models[1] ('two')", "'weight'", ">= 0"),
    ("unreleased = true", 'unreleased = "yes"', "('two')", "'unreleased'", "true or false"),
    ("temperature = 0.5", 'temperature = "hot"', "('two')", "'params.temperature'", "number"),
    ("temperature = 0.5", "temprature = 0.5", "('two')", "'params.temprature'", "unknown"),
    (
        '"http://127.0.0.1:1/v1", model = "m1"',
        '"ftp://x", model = "m1"',
        "endpoints[0]",
        "'base_url'",
        "http(s) URL",
    ),
    ('model = "m1"', 'model = ""', "('one'): endpoints[0]", "'model'", "must not be empty"),
    ('model = "m1"', 'modle = "m1"', "('one'): endpoints[0]", "'modle'", "unknown field"),
    ("weight = 2", 'think_tags = "yes"', "('two')", "'think_tags'", "auto, opened, off"),
    ('name = "two"', 'name = "one"', "models[1] ('one')", "'name'", "duplicate"),
    ('"TWO_API_KEY"', '"NOPE_API_KEY"', "endpoints[0]", "'api_key_env'", "NOPE_API_KEY is not set"),
    ('"TWO_API_KEY"', '"not a name"', "endpoints[0]", "'api_key_env'", "variable name"),
    ("http://127.0.0.1:1/v1/", "http://127.0.0.1:8o00/v1/", "endpoints[0]", "'base_url'", "port"),
    ("http://127.0.0.1:1/v1/", "http://127.0.0.1:187650/v1", "endpoints[0]", "'base_url'", "port"),
    (
        "http://127.0.0.1:1/v1/",
        "http://user:pw@127.0.0.1:1/v1/",
        "endpoints[0]",
        "'base_url'",
        "credentials",
    ),
]


@pytest.mark.parametrize(("old", "new", "entry", "field", "problem"), BAD)
def test_bad_field_named(
    tmp_path: Path, old: str, new: str, entry: str, field: str, problem: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"TWO_API_KEY": "sk-abc"})
    message = str(info.value)
    assert message.startswith(str(path))
    for part in (entry, field, problem):
        assert part in message, message


def test_needs_two_models(tmp_path: Path) -> None:
    text = GOOD.replace("weight = 2", "weight = 0")
    with pytest.raises(ConfigError, match="at least two models"):
        load_config(write(tmp_path, text), environ={"TWO_API_KEY": "k"})


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[[models]\nname="))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_endpoints() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\] \('a'\): field 'endpoints': is required"):
        parse_config({"models": [{"name": "a"}, {"name": "b"}]})


def test_settings_from_env() -> None:
    s = Settings.from_env({"ARENA_PORT": "9000", "ARENA_DATABASE_URL": "sqlite:///x.db"})
    assert s.port == 9000 and s.database_url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="ARENA_PORT"):
        Settings.from_env({"ARENA_PORT": "http"})


def test_cli_fails_at_start_with_one_message(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("weight = 2", 'weight = "x"'))
    result = subprocess.run(
        [sys.executable, "-m", "arena", "serve"],
        env={"ARENA_CONFIG": str(path), "PATH": "/usr/bin:/bin", "TWO_API_KEY": "sk-secret"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"arena: error: {path}: models[1] ('two'): field 'weight': must be a number, got 'x'"
    ]
    assert "sk-secret" not in result.stderr + result.stdout


def test_every_setting_is_documented() -> None:
    """docs/configuration.md shows exactly the settings arena/config.py declares."""
    from dataclasses import fields

    from arena.config import settings_markdown
    from ratings import RatingOptions

    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_markdown() in doc
    for f in fields(RatingOptions):
        assert f"| `{f.name}` |" in doc, f.name


def test_new_sections_parse_and_fail_by_name(tmp_path: Path) -> None:
    text = GOOD + '\n[ratings]\ninterval_minutes = 0\n[ratings.options]\nci = "bootstrap"\n'
    config = load_config(write(tmp_path, text), environ={"TWO_API_KEY": "k"})
    assert config.ratings.interval_minutes == 0 and config.rating_options.ci == "bootstrap"
    for bad, where in [
        ("[ratings]\ninterval_minutes = -1\n", "[ratings]: field 'interval_minutes'"),
        ("[export]\npage_size = true\n", "[export]: field 'page_size'"),
        ("[leaderboard]\nmin_vote = 3\n", "[leaderboard]: field 'min_vote': unknown"),
        ('[ratings.options]\nci = "guess"\n', "[ratings.options]"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, GOOD + "\n" + bad), environ={"TWO_API_KEY": "k"})
        assert where in str(info.value), str(info.value)


def test_registry_toml_reads_back_the_same(tmp_path: Path) -> None:
    import tomllib

    from arena.config import registry_toml

    data = {
        "arena": {"title": 'Quotes " and \\ slashes', "max_turns": 2, "demo": True},
        "ratings": {"interval_minutes": 0.5, "options": {"ci": "bootstrap", "rounds": 50}},
        "models": [
            {"name": "a", "weight": 1.5, "endpoints": [{"base_url": "http://x/v1", "model": "m"}]},
            {
                "name": "b",
                "params": {"temperature": 0.7},
                "endpoints": [{"base_url": "http://y/v1", "model": "n"}],
            },
        ],
    }
    assert tomllib.loads(registry_toml(data)) == data
    assert parse_config(tomllib.loads(registry_toml(data))) == parse_config(data)


STRATEGY = """
[[models]]
name = "one-best-of-4"
family = "one"
endpoints = [{ base_url = "http://127.0.0.1:1/v1", model = "m1", weight = 2, max_concurrent = 8 }]

[models.strategy]
kind = "best_of_n"
n = 4
temperature = 0.8

[models.strategy.reward]
base_url = "http://127.0.0.1:2"
model = "rm"
api = "classify"
"""

BAD_STRATEGY = [
    ('kind = "best_of_n"', 'kind = "best_of"', "strategy", "'kind'", "best_of_n, process_reward"),
    ("n = 4", "n = 1", "strategy", "'n'", "from 2 to 64"),
    ("n = 4", "n = 65", "strategy", "'n'", "from 2 to 64"),
    ("temperature = 0.8", "temperature = -1", "strategy", "'temperature'", ">= 0"),
    ('api = "classify"', 'api = "score"', "strategy.reward", "'api'", "classify, pooling"),
    (
        STRATEGY[STRATEGY.index("[models.strategy.reward]") :],
        "",
        "strategy",
        "'reward'",
        "best_of_n needs a reward model",
    ),
    ("weight = 2", "weight = 0", "endpoints[0]", "'weight'", "> 0"),
    ("max_concurrent = 8", "max_concurrent = 0", "endpoints[0]", "'max_concurrent'", "at least 1"),
    ('family = "one"', 'api = "grpc"', "('one-best-of-4')", "'api'", "openai, anthropic"),
    ('family = "one"', "thinking_budget = 0", "('one-best-of-4')", "'thinking_budget'", "at least"),
    (
        'family = "one"',
        'thinking_budget_field = "a b"',
        "('one-best-of-4')",
        "'thinking_budget_field'",
        "field name",
    ),
]


def test_strategy_and_replicas_parse(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + STRATEGY), environ={"TWO_API_KEY": "k"})
    entry = config.model("one-best-of-4")
    assert entry.family == "one" and config.model("two").family == "two"
    assert entry.strategy is not None and entry.strategy.kind == "best_of_n"
    assert entry.strategy.n == 4 and entry.strategy.temperature == 0.8
    assert entry.strategy.reward is not None and entry.strategy.reward.api == "classify"
    assert entry.endpoints[0].weight == 2 and entry.endpoints[0].max_concurrent == 8
    # A process reward model scores steps through /pooling only.
    prm = STRATEGY.replace('"best_of_n"', '"process_reward"')
    with pytest.raises(ConfigError, match="scores steps through `pooling`"):
        load_config(write(tmp_path, GOOD + prm), environ={"TWO_API_KEY": "k"})


@pytest.mark.parametrize(("old", "new", "entry", "field", "problem"), BAD_STRATEGY)
def test_bad_strategy_named(
    tmp_path: Path, old: str, new: str, entry: str, field: str, problem: str
) -> None:
    assert old in STRATEGY
    path = write(tmp_path, GOOD + STRATEGY.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"TWO_API_KEY": "k"})
    message = str(info.value)
    for part in (entry, field, problem):
        assert part in message, message
