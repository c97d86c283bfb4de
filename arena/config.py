"""Settings from the environment and the model registry from a TOML file.

Both are frozen: they are read once at start and passed down. A bad file fails
at start with one message naming the file, the entry and the field.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from arena.errors import ConfigError

DEFAULT_CONFIG = "arena.toml"
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
}


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
        return cls(
            config_path=Path(env.get("ARENA_CONFIG", DEFAULT_CONFIG)),
            database_url=env.get("ARENA_DATABASE_URL", DEFAULT_DATABASE_URL),
            host=env.get("ARENA_HOST", "127.0.0.1"),
            port=port,
            ip_salt=Secret(salt) if salt else None,
        )


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `between_tokens` bounds the gap between two streamed chunks."""

    connect: float = 10.0
    first_token: float = 60.0
    between_tokens: float = 30.0
    total: float = 600.0


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key_env: str | None = None
    api_key: Secret | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    endpoints: tuple[Endpoint, ...]
    organization: str = ""
    license: str = ""
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    unreleased: bool = False
    weight: float = 1.0
    think_tags: ThinkTags = "auto"


@dataclass(frozen=True)
class ArenaConfig:
    models: tuple[ModelEntry, ...]
    title: str = "Arena"
    max_turns: int = 3
    max_prompt_chars: int = 8000
    max_concurrent_events: int = 1000
    abandon_after_minutes: float = 120.0
    demo: bool = False
    timeouts: Timeouts = Timeouts()
    source: str = "<memory>"

    def model(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)


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


def _positive(where: _Where, table: Mapping[str, Any], key: str, default: float) -> float:
    value = float(_get(where, table, key, (int, float), default))
    if not math.isfinite(value) or value <= 0:
        raise where.fail(key, f"must be a number > 0, got {table.get(key)!r}")
    return value


def _endpoint(where: _Where, raw: Any, index: int, environ: Mapping[str, str]) -> Endpoint:
    if not isinstance(raw, dict):
        raise where.fail(f"endpoints[{index}]", "must be a table with base_url and model")
    here = _Where(where.source, f"{where.entry}: endpoints[{index}]")
    _check_keys(here, raw, {"base_url", "model", "api_key_env"})
    base_url = _get(here, raw, "base_url", str).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise here.fail("base_url", f"must be an http(s) URL, got {base_url!r}")
    if parts.username or parts.password:
        raise here.fail("base_url", "must not hold credentials; use api_key_env")
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
    return Endpoint(base_url=base_url, model=model, api_key_env=key_env, api_key=key)


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
            "weight",
            "think_tags",
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
        if not ok or isinstance(value, bool):
            raise where.fail(f"params.{key}", f"must be {_kind_name((kind,))}, got {value!r}")
        params[key] = value
    think_tags = _get(where, raw, "think_tags", str, "auto")
    if think_tags not in _THINK_TAGS:
        raise where.fail(
            "think_tags", f"must be one of {', '.join(_THINK_TAGS)}, got {think_tags!r}"
        )
    weight = float(_get(where, raw, "weight", (int, float), 1.0))
    if not math.isfinite(weight) or weight < 0:
        raise where.fail("weight", f"must be a number >= 0, got {raw.get('weight')!r}")
    return ModelEntry(
        name=name,
        endpoints=endpoints,
        organization=_get(where, raw, "organization", str, ""),
        license=_get(where, raw, "license", str, ""),
        description=_get(where, raw, "description", str, ""),
        params=params,
        unreleased=_get(where, raw, "unreleased", bool, False),
        weight=weight,
        think_tags=think_tags,
    )


def parse_config(
    data: Mapping[str, Any], source: str = "<memory>", environ: Mapping[str, str] | None = None
) -> ArenaConfig:
    env = os.environ if environ is None else environ
    top = _Where(source)
    _check_keys(top, data, {"arena", "timeouts", "models"})
    arena = _get(top, data, "arena", dict, {})
    where = _Where(source, "[arena]")
    _check_keys(
        where,
        arena,
        {
            "title",
            "max_turns",
            "max_prompt_chars",
            "max_concurrent_events",
            "abandon_after_minutes",
            "demo",
        },
    )
    max_turns = _get(where, arena, "max_turns", int, 3)
    if max_turns < 1:
        raise where.fail("max_turns", f"must be at least 1, got {max_turns}")
    max_chars = _get(where, arena, "max_prompt_chars", int, 8000)
    if max_chars < 1:
        raise where.fail("max_prompt_chars", f"must be at least 1, got {max_chars}")
    max_events = _get(where, arena, "max_concurrent_events", int, 1000)
    if max_events < 1:
        raise where.fail("max_concurrent_events", f"must be at least 1, got {max_events}")
    abandon_after = _positive(where, arena, "abandon_after_minutes", 120.0)
    t_raw = _get(top, data, "timeouts", dict, {})
    where_t = _Where(source, "[timeouts]")
    _check_keys(where_t, t_raw, {"connect", "first_token", "between_tokens", "total"})
    d = Timeouts()
    timeouts = Timeouts(
        connect=_positive(where_t, t_raw, "connect", d.connect),
        first_token=_positive(where_t, t_raw, "first_token", d.first_token),
        between_tokens=_positive(where_t, t_raw, "between_tokens", d.between_tokens),
        total=_positive(where_t, t_raw, "total", d.total),
    )
    models_raw = _get(top, data, "models", list)
    models = tuple(_model(source, raw, i, env) for i, raw in enumerate(models_raw))
    seen: set[str] = set()
    for i, m in enumerate(models):
        if m.name in seen:
            raise ConfigError(f"{source}: models[{i}] ({m.name!r}): field 'name': duplicate name")
        seen.add(m.name)
    if sum(1 for m in models if m.weight > 0) < 2:
        raise top.fail("models", "a battle needs at least two models with weight > 0")
    return ArenaConfig(
        models=models,
        title=_get(where, arena, "title", str, "Arena"),
        max_turns=max_turns,
        max_prompt_chars=max_chars,
        max_concurrent_events=max_events,
        abandon_after_minutes=abandon_after,
        demo=_get(where, arena, "demo", bool, False),
        timeouts=timeouts,
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
