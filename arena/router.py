"""Which models fight (matchmaking), and the provider each one is reached through (routing).

Providers are built once per registry and kept: a model's replicas sit behind one
`EndpointPool`, a strategy wraps the pool, and replica state (health, requests in flight) lives
on as long as the process, across registry reloads (issue 7).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from arena.config import Api, ArenaConfig, Endpoint, ModelEntry, Registry, Timeouts
from arena.errors import NotEnoughModels
from arena.providers.anthropic import AnthropicProvider
from arena.providers.base import Provider
from arena.providers.openai import OpenAIProvider
from arena.providers.pool import EndpointPool, Replica, watch_health
from arena.providers.reward import RewardClient
from arena.providers.strategies import StrategyProvider

# One adapter per API type: the same constructor, so a pool does not care which it wraps.
Adapter = Callable[..., Provider]
ADAPTERS: Mapping[Api, Adapter] = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}


def _auth_headers(api: Api, endpoint: Endpoint) -> dict[str, str]:
    """Headers of a health check, so that hosted APIs that want a key answer it."""
    if endpoint.api_key is None:
        return {}
    key = endpoint.api_key.reveal()
    if api == "anthropic":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"Authorization": f"Bearer {key}"}


def request_params(entry: ModelEntry) -> dict[str, Any]:
    """What a request to this entry carries besides the messages: its params, and its thinking
    budget under the server's own name (`thinking_token_budget` for vLLM; a dotted name nests,
    as `chat_template_kwargs.thinking_budget` for SGLang with Qwen3; the Anthropic adapter maps
    `thinking_budget` to its `thinking` block)."""
    params: dict[str, Any] = {k: v for k, v in entry.params.items()}
    if entry.thinking_budget is None:
        return params
    path = (
        ["thinking_budget"] if entry.api == "anthropic" else entry.thinking_budget_field.split(".")
    )
    where = params
    for key in path[:-1]:
        inner = where.get(key)
        where[key] = dict(inner) if isinstance(inner, Mapping) else {}
        where = where[key]
    where[path[-1]] = entry.thinking_budget
    return params


@dataclass
class _Built:
    entry: ModelEntry  # kept to tell a reloaded entry (a new object) from this one
    pool: EndpointPool
    provider: Provider


class Router:
    def __init__(
        self,
        registry: Registry | ArenaConfig,
        client: httpx.AsyncClient,
        rng: random.Random | None = None,
        adapters: Mapping[Api, Adapter] = ADAPTERS,
    ) -> None:
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.client = client
        self.rng = rng or random.SystemRandom()
        self.adapters = adapters
        self._replicas: dict[tuple[str, str, str, str], Replica] = {}
        self._built: dict[str, _Built] = {}
        # Set whenever a request ends: pools that share a replica wake each other's queue.
        self._freed = asyncio.Event()

    @property
    def config(self) -> ArenaConfig:
        return self.registry.current

    def available(self, entry: ModelEntry) -> bool:
        """Can this model answer now: has it a healthy replica?"""
        return self._build(entry).pool.available

    def pick_pair(self, config: ArenaConfig | None = None) -> tuple[ModelEntry, ModelEntry]:
        """Two distinct models drawn by weight among those that can answer, in random order.

        Drawing the second from what is left favours no position once the pair is
        shuffled, so neither side carries a hint.
        """
        pool = [m for m in (config or self.config).models if m.drawable and self.available(m)]
        if len(pool) < 2:
            raise NotEnoughModels("Fewer than two models are available right now.")
        first = self.rng.choices(pool, weights=[m.weight for m in pool])[0]
        rest = [m for m in pool if m is not first]
        second = self.rng.choices(rest, weights=[m.weight for m in rest])[0]
        pair = [first, second]
        self.rng.shuffle(pair)
        return pair[0], pair[1]

    def provider(self, entry: ModelEntry) -> Provider:
        """The provider of this entry: built at its first use, kept until the entry changes."""
        return self._build(entry).provider

    def replicas(self) -> Iterable[Replica]:
        """The replicas of the registry in force, each once (entries may share one)."""
        seen: dict[int, Replica] = {}
        for entry in self.config.models:
            for replica in self._build(entry).pool.replicas:
                seen.setdefault(id(replica), replica)
        return list(seen.values())

    async def watch_health(self) -> None:
        """Check every replica in the background (started by the app's lifespan)."""
        await watch_health(self.client, self.replicas, lambda: self.config.routing)

    def _build(self, entry: ModelEntry) -> _Built:
        built = self._built.get(entry.name)
        if built is not None and built.entry is entry:
            return built
        timeouts = self.config.timeouts
        replicas = [self._replica(entry, e, timeouts) for e in entry.endpoints]
        pool = EndpointPool(replicas, lambda: self.config.routing, self.rng, self._freed)
        provider: Provider = pool
        if entry.strategy is not None:
            reward = entry.strategy.reward
            scorer = RewardClient(self.client, reward, timeouts.total) if reward else None
            provider = StrategyProvider(pool, entry.strategy, scorer)
        built = _Built(entry, pool, provider)
        self._built[entry.name] = built
        return built

    def _replica(self, entry: ModelEntry, endpoint: Endpoint, timeouts: Timeouts) -> Replica:
        """The replica for this server and model, shared by every entry that names it; a
        reload that changes its settings (key, cap, timeouts) makes a new one."""
        routing = self.config.routing
        key = (entry.api, endpoint.base_url, endpoint.model, entry.think_tags)
        cap = endpoint.max_concurrent or routing.max_concurrent
        health = endpoint.base_url + (endpoint.health_path or routing.health_path)
        old = self._replicas.get(key)
        adapter = self.adapters[entry.api]
        if (
            old is not None
            and old.endpoint == endpoint
            and old.endpoint.api_key == endpoint.api_key
            and old.cap == cap
            and old.health_url == health
            and getattr(old.provider, "timeouts", timeouts) == timeouts
        ):
            return old
        provider = adapter(self.client, endpoint, timeouts, think_tags=entry.think_tags)
        replica = Replica(endpoint, provider, cap, health, _auth_headers(entry.api, endpoint))
        if old is not None:  # what we know of the server's health carries over
            replica.healthy, replica.failures = old.healthy, old.failures
            replica.next_check = old.next_check
        self._replicas[key] = replica
        return replica
