"""Which models fight (matchmaking), and the provider each one is reached through (routing).

Providers are built once per registry and kept: a model's replicas sit behind one
`EndpointPool`, a strategy wraps the pool, and replica state (health, requests in flight) lives
on as long as the process, across registry reloads (issue 7).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from arena.config import (
    Api,
    ArenaConfig,
    Endpoint,
    ModelEntry,
    Registry,
    RewardEndpoint,
    Secret,
    Timeouts,
)
from arena.errors import EndpointError, NotEnoughModels
from arena.providers.anthropic import AnthropicProvider
from arena.providers.anthropic import auth_headers as anthropic_auth_headers
from arena.providers.base import ChatRequest, Chunk, Provider
from arena.providers.http import bearer
from arena.providers.openai import OpenAIProvider
from arena.providers.pool import EndpointPool, Replica, watch_health
from arena.providers.reward import RewardClient, server_root
from arena.providers.strategies import StrategyProvider

# One adapter per API type: the same constructor, so a pool does not care which it wraps.
Adapter = Callable[..., Provider]
ADAPTERS: Mapping[Api, Adapter] = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}


# Each API's credential headers, which health checks send too: hosted APIs that want a key
# answer a check only with it.
AUTH_HEADERS: Mapping[Api, Callable[[Secret | None], dict[str, str]]] = {
    "openai": bearer,
    "anthropic": anthropic_auth_headers,
}


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
    reward: Replica | None = None  # a strategy's reward model, health-checked like a replica

    @property
    def available(self) -> bool:
        """Can the entry answer: a healthy replica, and its reward model up if it has one (a
        best-of-N whose reward model is down would sample N times and then fail)."""
        return self.pool.available and (self.reward is None or self.reward.healthy)


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
        return self._build(entry).available

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

    def replicas(self) -> list[Replica]:
        """The replicas of the registry in force, each once (entries may share one)."""
        seen: dict[int, Replica] = {}
        for entry in self.config.models:
            built = self._build(entry)
            for replica in (*built.pool.replicas, *([built.reward] if built.reward else [])):
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
        reward_replica = None
        if entry.strategy is not None:
            reward = entry.strategy.reward
            scorer = RewardClient(self.client, reward, timeouts.total) if reward else None
            provider = StrategyProvider(pool, entry.strategy, scorer)
            if reward is not None:
                reward_replica = self._reward_replica(reward)
        built = _Built(entry, pool, provider, reward_replica)
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
        replica = Replica(
            endpoint, provider, cap, health, AUTH_HEADERS[entry.api](endpoint.api_key)
        )
        if old is not None:  # the server is the same: its health and its load carry over
            replica.healthy, replica.failures = old.healthy, old.failures
            replica.next_check, replica.slots = old.next_check, old.slots
        self._replicas[key] = replica
        return replica

    def _reward_replica(self, reward: RewardEndpoint) -> Replica:
        """A reward model, as a replica that is only health-checked (its requests go through
        the strategy's `RewardClient`): shared by every strategy that names it."""
        key = ("reward", reward.base_url, reward.model, "")
        health = server_root(reward.base_url) + "/v1/models"
        old = self._replicas.get(key)
        if old is not None and old.health_url == health:
            return old
        endpoint = Endpoint(reward.base_url, reward.model)
        cap = self.config.routing.max_concurrent
        replica = Replica(endpoint, _HealthOnly(), cap, health, bearer(reward.api_key))
        self._replicas[key] = replica
        return replica


class _HealthOnly:
    """The provider of a replica that is only health-checked: a reward model."""

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        raise EndpointError("A reward model takes no chat requests.")
        yield Chunk()  # an async generator, like every provider
