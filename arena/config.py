"""Settings from the environment and the model registry from a TOML file.

Both are frozen: they are read once at start and passed down. A bad file fails
at start with one message naming the file, the entry and the field.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from arena.errors import ConfigError
from ratings import RatingOptions

DEFAULT_CONFIG = "arena.toml"
# Used when neither ARENA_CONFIG nor ./arena.toml exists: the demo models, shipped in the wheel.
DEMO_CONFIG = Path(__file__).resolve().parent / "demo.toml"
DEFAULT_DATABASE_URL = "sqlite:///arena.db"
ThinkTags = Literal["auto", "opened", "off"]
_THINK_TAGS = ("auto", "opened", "off")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Generation parameters passed through to the endpoint as-is.
_PARAMS = {
    "temperature": float,
    "top_p": float,
    "max_tokens": int,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "reasoning_effort": str,
    "max_completion_tokens": int,
    "top_k": int,
    "chat_template_kwargs": dict,  # e.g. { enable_thinking = false } (vLLM, SGLang)
}
Api = Literal["openai", "anthropic"]
APIS = ("openai", "anthropic")


class Secret:
    """A value that never prints: repr and str hide it, so logs and pages cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Process settings, built from the environment by `Settings.from_env`."""

    config_path: Path = Path(DEFAULT_CONFIG)
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 7860
    ip_salt: Secret | None = None
    secret_key: Secret | None = None  # signs voter cookies
    redis_url: str | None = None  # shared rate-limit counters
    admin_token: Secret | None = None  # bearer token of /api/v1/admin

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        port_text = env.get("ARENA_PORT", "7860")
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ConfigError(f"ARENA_PORT must be a port number, got {port_text!r}") from None
        salt = env.get("ARENA_IP_SALT")
        config_path = Path(env.get("ARENA_CONFIG", DEFAULT_CONFIG))
        if "ARENA_CONFIG" not in env and not config_path.exists():
            config_path = DEMO_CONFIG
        return cls(
            config_path=config_path,
            database_url=env.get("ARENA_DATABASE_URL", DEFAULT_DATABASE_URL),
            host=env.get("ARENA_HOST", "127.0.0.1"),
            port=port,
            ip_salt=Secret(salt) if salt else None,
            secret_key=Secret(key) if (key := env.get("ARENA_SECRET_KEY")) else None,
            redis_url=env.get("ARENA_REDIS_URL") or None,
            admin_token=Secret(token) if (token := env.get("ARENA_ADMIN_TOKEN")) else None,
        )


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A field that is also a configuration setting: the one declaration behind parsing,
    `arena settings` and docs/configuration.md (tests/test_config.py checks the docs)."""
    meta = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "choices": choices,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `between_tokens` bounds the gap between two streamed chunks."""

    connect: float = setting(10.0, "seconds to open a connection to an endpoint", above=0)
    first_token: float = setting(60.0, "seconds until the first token, reasoning included", above=0)
    between_tokens: float = setting(30.0, "longest silence once streaming, in seconds", above=0)
    total: float = setting(600.0, "seconds for a whole answer", above=0)


@dataclass(frozen=True)
class RatingsConfig:
    """The ratings job: which votes count and how often it runs (docs/leaderboard.md)."""

    interval_minutes: float = setting(
        10.0, "minutes between ratings runs inside `arena serve`; 0 turns the job off", minimum=0
    )
    include_imported: bool = setting(True, "count votes brought in by `arena import`")
    dedup_top_fraction: float = setting(
        0.005, "prompts among this top fraction by frequency are capped", minimum=0
    )
    dedup_max_per_prompt: int = setting(
        10, "votes a capped prompt may contribute at most", minimum=1
    )
    language_min_votes: int = setting(
        500, "counted votes a language needs to become a leaderboard category", minimum=1
    )
    long_prompt_chars: int = setting(
        2000, "a prompt longer than this many characters is in the `long` category", minimum=1
    )
    anomaly_alpha: float = setting(
        0.05,
        "family-wise level at which a voter is flagged as anomalous (Fisher's method, "
        "Bonferroni over the checkpoints); 0 turns the test off",
        minimum=0,
    )
    anomaly_checkpoints: int = setting(
        5, "random checkpoints at which a voter's combined p-value is tested", minimum=1
    )
    anomaly_min_votes: int = setting(
        10, "votes a voter needs before the anomaly test looks at them", minimum=1
    )
    upset_probability: float = setting(
        0.3,
        "a vote for a side the ratings give less than this win probability is an upset",
        minimum=0,
    )
    upset_weight: float = setting(
        1.0,
        "weight of an upset vote in the fits: 1 counts it in full and lists it for review, "
        "0 removes it",
        minimum=0,
        maximum=1,
    )
    counted_per_day_voter: int = setting(
        100,
        "votes per voter per day the ratings count; later ones are left out (0: no cap)",
        minimum=0,
    )
    counted_per_day_ip: int = setting(
        300, "votes per client IP per day the ratings count (0: no cap)", minimum=0
    )


@dataclass(frozen=True)
class LeaderboardConfig:
    """What the leaderboard tab and the export API show."""

    min_votes: int = setting(
        300, "a model with fewer counted votes is marked preliminary", minimum=0
    )
    cache_seconds: int = setting(
        60, "Cache-Control max-age of the export API's responses", minimum=0
    )


@dataclass(frozen=True)
class ExportConfig:
    """The research export (`GET /api/v1/battles`, `arena export battles`)."""

    include_content: bool = setting(False, "include prompts and answers in the battle export")
    page_size: int = setting(1000, "rows per page of the battle export by default", minimum=1)
    max_page_size: int = setting(10000, "largest `limit` a client may ask for", minimum=1)


@dataclass(frozen=True)
class LimitsConfig:
    """Abuse limits, per voter cookie and per client IP (docs/security.md). 0 turns one off.

    Counted in the battle service, so the page and the scripted API share them."""

    prompts_per_minute_voter: int = setting(
        10, "prompts (first or follow-up) per voter per minute", minimum=0
    )
    prompts_per_minute_ip: int = setting(30, "prompts per client IP per minute", minimum=0)
    battles_per_hour_voter: int = setting(
        60, "battles started per voter per hour; New battle rerolls count", minimum=0
    )
    battles_per_hour_ip: int = setting(200, "battles started per client IP per hour", minimum=0)
    votes_per_day_voter: int = setting(300, "votes per voter per day", minimum=0)
    votes_per_day_ip: int = setting(1000, "votes per client IP per day", minimum=0)
    max_body_bytes: int = setting(
        262144, "largest HTTP request body; a larger one is refused before it is read", minimum=1024
    )


# `[limits]` with every abuse limit off: for load tests and test suites that play many battles
# from one address.
NO_LIMITS: dict[str, int] = {
    f.name: 0 for f in fields(LimitsConfig) if f.name.startswith(("prompts", "battles", "votes"))
}


@dataclass(frozen=True)
class SecurityConfig:
    """Anonymity, client addresses and what answers may render (docs/security.md)."""

    production: bool = setting(
        False, "production mode: ARENA_IP_SALT and ARENA_SECRET_KEY must be set at start"
    )
    trusted_proxies: tuple[str, ...] = setting(
        (), "IPs or CIDR ranges of proxies whose X-Forwarded-For is believed; none by default"
    )
    leak_terms: tuple[str, ...] = setting(
        (), "names, besides the registry's and the built-in list, that flag an answer as a leak"
    )
    builtin_leak_terms: bool = setting(
        True, "check answers against the built-in list of well-known model and company names"
    )
    remote_images: bool = setting(False, "let answers show images from other sites")


@dataclass(frozen=True)
class ModerationConfig:
    """An optional moderation endpoint in the OpenAI moderation API's shape, asked about every
    user turn before either model sees it."""

    url: str = setting("", "moderation endpoint (`…/v1/moderations`); empty turns the hook off")
    model: str = setting("", "`model` sent with each request; empty sends none")
    api_key_env: str = setting("", "environment variable holding the endpoint's API key")
    on_error: str = setting(
        "open",
        "when the endpoint fails: `open` lets the turn through, `closed` refuses it",
        choices=("open", "closed"),
    )
    timeout: float = setting(5.0, "seconds to wait for the endpoint", above=0)
    store_text: bool = setting(True, "keep the text of a blocked turn with its moderation event")


@dataclass(frozen=True)
class PrivacyConfig:
    """What is kept about voters, and for how long."""

    retention_days: float = setting(
        0.0,
        "delete prompt and answer text this many days after a battle; votes stay. 0 keeps it",
        minimum=0,
    )


@dataclass(frozen=True)
class RoutingConfig:
    """How requests reach a model's replicas (issue 7, docs/models.md)."""

    max_concurrent: int = setting(
        64, "requests in flight per endpoint unless the endpoint sets its own", minimum=1
    )
    queue_seconds: float = setting(
        10.0, "how long a request waits for a free slot before it fails", minimum=0
    )
    health_path: str = setting(
        "/models", "path, after an endpoint's base_url, checked in the background"
    )
    health_seconds: float = setting(10.0, "seconds between checks of a healthy endpoint", above=0)
    health_timeout: float = setting(3.0, "seconds a health check may take", above=0)
    backoff_max_seconds: float = setting(
        60.0, "longest wait between checks of an unhealthy endpoint (doubling from 1 s)", above=0
    )
    retry: bool = setting(
        True, "retry once on another replica a request that failed before its first token"
    )


@dataclass(frozen=True)
class Endpoint:
    """One replica of a model: a server and the model name it knows it by (issue 7)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    api_key: Secret | None = field(default=None, compare=False)
    weight: float = 1.0  # share of requests among healthy replicas with room
    max_concurrent: int | None = None  # requests in flight at most; None: [routing]'s default
    health_path: str | None = None  # checked in the background; None: [routing]'s default

    @property
    def name(self) -> str:
        """How logs and the database name this replica: no key, no query string."""
        return f"{self.base_url}#{self.model}"


RewardApi = Literal["classify", "pooling"]
REWARD_APIS = ("classify", "pooling")


@dataclass(frozen=True)
class RewardEndpoint:
    """A reward model served by vLLM: an outcome reward model through `/classify` or
    `/pooling`, or a process reward model through `/pooling` (one score per step)."""

    base_url: str  # up to and including /v1 ... or the server root; see docs/models.md
    model: str
    api: RewardApi = "pooling"
    api_key_env: str | None = None
    api_key: Secret | None = field(default=None, compare=False)


StrategyKind = Literal["best_of_n", "process_reward", "self_consistency", "weighted_vote"]
STRATEGY_KINDS = ("best_of_n", "process_reward", "self_consistency", "weighted_vote")
Aggregate = Literal["product", "min", "last"]
AGGREGATES = ("product", "min", "last")


@dataclass(frozen=True)
class Strategy:
    """A test-time-compute strategy Arena runs itself on top of a model's endpoints."""

    kind: StrategyKind
    n: int
    temperature: float | None = None  # sampling temperature; None keeps the entry's params
    reward: RewardEndpoint | None = None
    aggregate: Aggregate = "product"  # process_reward: how step scores make a solution score


@dataclass(frozen=True)
class ModelEntry:
    name: str
    endpoints: tuple[Endpoint, ...]
    organization: str = ""
    license: str = ""
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    unreleased: bool = False
    retired: bool = False
    weight: float = 1.0
    think_tags: ThinkTags = "auto"
    # Other names the model goes by; an answer naming one is an identity leak.
    aliases: tuple[str, ...] = ()
    api: Api = "openai"
    # Variants of the same weights share a family: the leaderboard draws them as one curve.
    family: str = ""
    strategy: Strategy | None = None
    thinking_budget: int | None = None  # reasoning tokens at most, sent as `thinking_budget_field`
    thinking_budget_field: str = "thinking_token_budget"  # vLLM's name; dotted for nesting

    @property
    def drawable(self) -> bool:
        """Drawn for new battles: a retired model keeps its ratings but fights no more."""
        return self.weight > 0 and not self.retired


@dataclass(frozen=True)
class ArenaConfig:
    models: tuple[ModelEntry, ...]
    title: str = setting("Arena", "page title")
    max_turns: int = setting(3, "prompts per battle, the first included", minimum=1)
    max_prompt_chars: int = setting(8000, "longest prompt accepted, in characters", minimum=1)
    max_concurrent_events: int = setting(
        1000, "Gradio events (battles, votes) served at once", minimum=1
    )
    abandon_after_minutes: float = setting(
        120.0, "unvoted battles untouched this long are marked abandoned", above=0
    )
    demo: bool = setting(False, "demo mode: shows the demo banner; demo battles count")
    heartbeat_seconds: float = setting(
        10.0, "how often each arena process tells the database it is alive", above=0
    )
    reveal: str = setting(
        "stream",
        "`stream` shows answers as they come; `together` shows both only when both are done, so "
        "a slower side (best-of-N, a long thinker) gives no hint and latency cannot sway votes",
        choices=("stream", "together"),
    )
    owner_gone_seconds: float = setting(
        30.0,
        "a battle still answering whose process has not been heard from this long (three "
        "heartbeats at least) is abandoned",
        above=0,
    )
    timeouts: Timeouts = Timeouts()
    ratings: RatingsConfig = RatingsConfig()
    leaderboard: LeaderboardConfig = LeaderboardConfig()
    export: ExportConfig = ExportConfig()
    limits: LimitsConfig = LimitsConfig()
    security: SecurityConfig = SecurityConfig()
    moderation: ModerationConfig = ModerationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    routing: RoutingConfig = RoutingConfig()
    rating_options: RatingOptions = field(default_factory=RatingOptions)
    source: str = "<memory>"

    def model(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def find(self, name: str) -> ModelEntry | None:
        for entry in self.models:
            if entry.name == name:
                return entry
        return None


# Sections of arena.toml and the dataclass each one fills; [arena] fills ArenaConfig itself.
SECTIONS: dict[str, type] = {
    "arena": ArenaConfig,
    "timeouts": Timeouts,
    "ratings": RatingsConfig,
    "leaderboard": LeaderboardConfig,
    "export": ExportConfig,
    "limits": LimitsConfig,
    "security": SecurityConfig,
    "moderation": ModerationConfig,
    "privacy": PrivacyConfig,
    "routing": RoutingConfig,
}


@dataclass(frozen=True)
class SettingInfo:
    section: str
    name: str
    default: Any
    help: str


def settings_table() -> list[SettingInfo]:
    """Every setting of arena.toml, in file order: for `arena settings` and the docs test."""
    out = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if "help" in f.metadata:
                out.append(SettingInfo(section, f.name, f.default, f.metadata["help"]))
    return out


def toml_value(value: Any) -> str:
    """A value as TOML: what `registry_toml` writes and docs/configuration.md shows."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def registry_toml(data: Mapping[str, Any]) -> str:
    """A registry given as data (what `parse_config` takes) as the text of an arena.toml:
    tables, their sub-tables, then [[models]]. For tests and benchmarks that start `arena`."""
    lines: list[str] = []
    for name, table in data.items():
        if name == "models":
            continue
        lines.append(f"[{name}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if k not in subtables]
        for sub, values in subtables.items():
            lines += ["", f"[{name}.{sub}]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for model in data.get("models", []):
        lines.append("[[models]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in model.items()]
        lines.append("")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    # Defaults as a reader writes them: 120, not 120.0.
    return f"{value:g}" if isinstance(value, float) else toml_value(value)


def settings_markdown() -> str:
    """One table per section: what docs/configuration.md shows (a test keeps them equal)."""
    out: list[str] = []
    section = None
    for s in settings_table():
        if s.section != section:
            section = s.section
            out += ["", f"`[{section}]`", "", "| setting | default | meaning |"]
            out.append("| --- | --- | --- |")
        out.append(f"| `{s.name}` | `{_shown(s.default)}` | {s.help} |")
    return "\n".join(out).strip() + "\n"


class _Where:
    """Builds error messages of the form `file: models[2] ('name'): field 'x': ...`."""

    def __init__(self, source: str, entry: str = "") -> None:
        self.source = source
        self.entry = entry

    def fail(self, field_name: str, problem: str) -> ConfigError:
        where = f"{self.source}: {self.entry}: " if self.entry else f"{self.source}: "
        return ConfigError(f"{where}field '{field_name}': {problem}")


def _check_keys(where: _Where, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise where.fail(key, f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _get(
    where: _Where,
    table: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    default: Any = ...,
) -> Any:
    if key not in table:
        if default is ...:
            raise where.fail(key, "is required")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # TOML booleans are ints in Python; keep them out of numeric fields.
    if isinstance(value, bool) and bool not in kinds:
        raise where.fail(key, f"must be {_kind_name(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise where.fail(key, f"must be {_kind_name(kinds)}, got {value!r}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))


def _endpoint(where: _Where, raw: Any, index: int, environ: Mapping[str, str]) -> Endpoint:
    if not isinstance(raw, dict):
        raise where.fail(f"endpoints[{index}]", "must be a table with base_url and model")
    here = _Where(where.source, f"{where.entry}: endpoints[{index}]")
    _check_keys(
        here, raw, {"base_url", "model", "api_key_env", "weight", "max_concurrent", "health_path"}
    )
    base_url, model, key_env, key = _server(here, raw, environ)
    weight = float(_get(here, raw, "weight", (int, float), 1.0))
    if not math.isfinite(weight) or weight <= 0:
        raise here.fail("weight", f"must be a number > 0, got {raw.get('weight')!r}")
    cap = _get(here, raw, "max_concurrent", int, None)
    if cap is not None and cap < 1:
        raise here.fail("max_concurrent", f"must be at least 1, got {cap!r}")
    health = _get(here, raw, "health_path", str, None)
    if health is not None and not health.startswith("/"):
        raise here.fail("health_path", f"must start with /, got {health!r}")
    return Endpoint(
        base_url=base_url,
        model=model,
        api_key_env=key_env,
        api_key=key,
        weight=weight,
        max_concurrent=cap,
        health_path=health,
    )


def _server(
    here: _Where, raw: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[str, str, str | None, Secret | None]:
    """base_url, model and API key of an endpoint or a reward endpoint."""
    base_url = _get(here, raw, "base_url", str).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise here.fail("base_url", f"must be an http(s) URL, got {base_url!r}")
    if parts.username or parts.password:
        raise here.fail("base_url", "must not hold credentials; use api_key_env")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number from 0 to 65535)
    except ValueError:
        raise here.fail("base_url", f"has no valid port: {base_url!r}") from None
    model = _get(here, raw, "model", str)
    if not model.strip():
        raise here.fail("model", "must not be empty")
    key_env = _get(here, raw, "api_key_env", str, None)
    key = None
    if key_env is not None:
        if not _ENV_NAME.match(key_env):
            raise here.fail("api_key_env", f"must be an environment variable name, got {key_env!r}")
        if not environ.get(key_env):
            raise here.fail("api_key_env", f"environment variable {key_env} is not set")
        key = Secret(environ[key_env])
    return base_url, model, key_env, key


def _strategy(where: _Where, raw: Any, environ: Mapping[str, str]) -> Strategy:
    here = _Where(where.source, f"{where.entry}: strategy")
    if not isinstance(raw, dict):
        raise where.fail("strategy", "must be a table with kind and n")
    _check_keys(here, raw, {"kind", "n", "temperature", "reward", "aggregate"})
    kind = _get(here, raw, "kind", str)
    if kind not in STRATEGY_KINDS:
        raise here.fail("kind", f"must be one of {', '.join(STRATEGY_KINDS)}, got {kind!r}")
    n = _get(here, raw, "n", int)
    if not 2 <= n <= 64:
        raise here.fail("n", f"must be from 2 to 64 samples, got {n!r}")
    temperature = _get(here, raw, "temperature", (int, float), None)
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise here.fail("temperature", f"must be a number >= 0, got {temperature!r}")
    aggregate = _get(here, raw, "aggregate", str, "product")
    if aggregate not in AGGREGATES:
        raise here.fail("aggregate", f"must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    reward = None
    if "reward" in raw:
        reward_raw = _get(here, raw, "reward", dict)
        at = _Where(where.source, f"{where.entry}: strategy.reward")
        _check_keys(at, reward_raw, {"base_url", "model", "api", "api_key_env"})
        base_url, model, key_env, key = _server(at, reward_raw, environ)
        api = _get(at, reward_raw, "api", str, "pooling")
        if api not in REWARD_APIS:
            raise at.fail("api", f"must be one of {', '.join(REWARD_APIS)}, got {api!r}")
        if kind == "process_reward" and api != "pooling":
            raise at.fail("api", "a process reward model scores steps through `pooling`")
        reward = RewardEndpoint(base_url, model, api, key_env, key)
    if reward is None and kind in ("best_of_n", "process_reward", "weighted_vote"):
        raise here.fail("reward", f"{kind} needs a reward model (a table with base_url and model)")
    return Strategy(
        kind=kind,
        n=n,
        temperature=None if temperature is None else float(temperature),
        reward=reward,
        aggregate=aggregate,
    )


def _model(source: str, raw: Any, index: int, environ: Mapping[str, str]) -> ModelEntry:
    where = _Where(source, f"models[{index}]")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: models[{index}]: must be a table ([[models]])")
    name = _get(where, raw, "name", str)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$", name):
        raise where.fail("name", f"must be 1-128 letters, digits or ._:/@+- , got {name!r}")
    where = _Where(source, f"models[{index}] ({name!r})")
    _check_keys(
        where,
        raw,
        {
            "name",
            "organization",
            "license",
            "description",
            "endpoints",
            "params",
            "unreleased",
            "retired",
            "weight",
            "think_tags",
            "aliases",
            "api",
            "family",
            "strategy",
            "thinking_budget",
            "thinking_budget_field",
        },
    )
    endpoints_raw = _get(where, raw, "endpoints", list)
    if not endpoints_raw:
        raise where.fail("endpoints", "needs at least one endpoint")
    endpoints = tuple(_endpoint(where, e, i, environ) for i, e in enumerate(endpoints_raw))
    params_raw = _get(where, raw, "params", dict, {})
    params: dict[str, Any] = {}
    for key, value in params_raw.items():
        if key not in _PARAMS:
            raise where.fail(f"params.{key}", f"unknown parameter (allowed: {', '.join(_PARAMS)})")
        kind = _PARAMS[key]
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if kind is dict and ok and not all(isinstance(k, str) for k in value):
            ok = False
        if not ok or isinstance(value, bool):
            raise where.fail(f"params.{key}", f"must be {_kind_name((kind,))}, got {value!r}")
        params[key] = value
    think_tags = _get(where, raw, "think_tags", str, "auto")
    if think_tags not in _THINK_TAGS:
        raise where.fail(
            "think_tags", f"must be one of {', '.join(_THINK_TAGS)}, got {think_tags!r}"
        )
    aliases = _get(where, raw, "aliases", list, [])
    if not all(isinstance(a, str) and a.strip() for a in aliases):
        raise where.fail("aliases", f"must be a list of non-empty strings, got {aliases!r}")
    weight = float(_get(where, raw, "weight", (int, float), 1.0))
    if not math.isfinite(weight) or weight < 0:
        raise where.fail("weight", f"must be a number >= 0, got {raw.get('weight')!r}")
    api = _get(where, raw, "api", str, "openai")
    if api not in APIS:
        raise where.fail("api", f"must be one of {', '.join(APIS)}, got {api!r}")
    budget = _get(where, raw, "thinking_budget", int, None)
    if budget is not None and budget < 1:
        raise where.fail("thinking_budget", f"must be at least 1 token, got {budget!r}")
    budget_field = _get(where, raw, "thinking_budget_field", str, "thinking_token_budget")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", budget_field):
        raise where.fail("thinking_budget_field", f"must be a field name, got {budget_field!r}")
    family = _get(where, raw, "family", str, name).strip() or name
    strategy = _strategy(where, raw["strategy"], environ) if "strategy" in raw else None
    return ModelEntry(
        name=name,
        endpoints=endpoints,
        organization=_get(where, raw, "organization", str, ""),
        license=_get(where, raw, "license", str, ""),
        description=_get(where, raw, "description", str, ""),
        params=params,
        unreleased=_get(where, raw, "unreleased", bool, False),
        retired=_get(where, raw, "retired", bool, False),
        weight=weight,
        think_tags=think_tags,
        aliases=tuple(aliases),
        api=api,
        family=family,
        strategy=strategy,
        thinking_budget=budget,
        thinking_budget_field=budget_field,
    )


def _setting_value(where: _Where, table: Mapping[str, Any], f: Any) -> Any:
    kind = type(f.default)
    if kind is tuple:  # a list of strings
        items = _get(where, table, f.name, list, list(f.default))
        if not all(isinstance(x, str) and x.strip() for x in items):
            raise where.fail(f.name, f"must be a list of non-empty strings, got {items!r}")
        return tuple(items)
    kinds: tuple[type, ...] = (int, float) if kind is float else (kind,)
    value = _get(where, table, f.name, kinds, f.default)
    meta = f.metadata
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise where.fail(f.name, f"must be a finite number, got {table.get(f.name)!r}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise where.fail(f.name, f"must be at least {meta['minimum']:g}, got {value!r}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise where.fail(f.name, f"must be at most {meta['maximum']:g}, got {value!r}")
    if meta["above"] is not None and value <= meta["above"]:
        raise where.fail(f.name, f"must be a number > {meta['above']:g}, got {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise where.fail(f.name, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
    return value


def _section(
    source: str, data: Mapping[str, Any], name: str, extra: frozenset[str] = frozenset()
) -> Any:
    """Parse one [section] of settings into the values its dataclass declares."""
    table = _get(_Where(source), data, name, dict, {})
    where = _Where(source, f"[{name}]")
    declared = [f for f in fields(SECTIONS[name]) if "help" in f.metadata]
    _check_keys(where, table, {f.name for f in declared} | extra)
    return {f.name: _setting_value(where, table, f) for f in declared}


def _rating_options(source: str, data: Mapping[str, Any]) -> RatingOptions:
    raw = data.get("ratings", {}).get("options", {})
    if not isinstance(raw, dict):
        raise _Where(source, "[ratings]").fail("options", "must be a table ([ratings.options])")
    try:
        return RatingOptions.from_dict(raw)
    except ValueError as err:
        raise ConfigError(f"{source}: [ratings.options]: {err}") from None


def parse_config(
    data: Mapping[str, Any], source: str = "<memory>", environ: Mapping[str, str] | None = None
) -> ArenaConfig:
    env = os.environ if environ is None else environ
    top = _Where(source)
    _check_keys(top, data, {*SECTIONS, "models"})
    arena = _section(source, data, "arena")
    models_raw = _get(top, data, "models", list)
    models = tuple(_model(source, raw, i, env) for i, raw in enumerate(models_raw))
    seen: set[str] = set()
    for i, m in enumerate(models):
        if m.name in seen:
            raise ConfigError(f"{source}: models[{i}] ({m.name!r}): field 'name': duplicate name")
        seen.add(m.name)
    if sum(1 for m in models if m.drawable) < 2:
        raise top.fail(
            "models", "a battle needs at least two models with weight > 0 that are not retired"
        )
    return ArenaConfig(
        models=models,
        **arena,
        timeouts=Timeouts(**_section(source, data, "timeouts")),
        ratings=RatingsConfig(**_section(source, data, "ratings", frozenset({"options"}))),
        leaderboard=LeaderboardConfig(**_section(source, data, "leaderboard")),
        export=ExportConfig(**_section(source, data, "export")),
        limits=LimitsConfig(**_section(source, data, "limits")),
        security=SecurityConfig(**_section(source, data, "security")),
        moderation=ModerationConfig(**_section(source, data, "moderation")),
        privacy=PrivacyConfig(**_section(source, data, "privacy")),
        routing=RoutingConfig(**_section(source, data, "routing")),
        rating_options=_rating_options(source, data),
        source=source,
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> ArenaConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (set ARENA_CONFIG)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration file: {err.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_config(data, source=str(path), environ=environ)


class Registry:
    """The registry in force: one `ArenaConfig`, replaced whole by `reload`.

    The swap is one assignment, so a reader sees the old registry or the new one, never a mix;
    a battle reads `current` once when it starts a turn and keeps that copy (issue 8, §7).
    """

    def __init__(self, config: ArenaConfig, path: Path | None = None) -> None:
        self._current = config
        self.path = path
        self.stamp: str | None = None  # the last reload announcement this copy follows

    @property
    def current(self) -> ArenaConfig:
        return self._current

    def reload(self, environ: Mapping[str, str] | None = None) -> ArenaConfig:
        """Read the file again; on any error the registry in force stays (`ConfigError`)."""
        if self.path is None:
            raise ConfigError("this registry was not read from a file, so it cannot be reloaded")
        config = load_config(self.path, environ)
        self._current = config
        return config
