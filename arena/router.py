"""Which models fight, and through which endpoint each one is reached."""

from __future__ import annotations

import random

import httpx

from arena.config import ArenaConfig, ModelEntry, Registry
from arena.errors import NotEnoughModels
from arena.providers.base import Provider
from arena.providers.openai import OpenAIProvider


class Router:
    def __init__(
        self,
        registry: Registry | ArenaConfig,
        client: httpx.AsyncClient,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.client = client
        self.rng = rng or random.SystemRandom()

    @property
    def config(self) -> ArenaConfig:
        return self.registry.current

    def pick_pair(self, config: ArenaConfig | None = None) -> tuple[ModelEntry, ModelEntry]:
        """Two distinct models drawn by weight, in random order.

        Drawing the second from what is left favours no position once the pair is
        shuffled, so neither side carries a hint.
        """
        pool = [m for m in (config or self.config).models if m.drawable]
        if len(pool) < 2:
            raise NotEnoughModels("Fewer than two models are available right now.")
        first = self.rng.choices(pool, weights=[m.weight for m in pool])[0]
        rest = [m for m in pool if m is not first]
        second = self.rng.choices(rest, weights=[m.weight for m in rest])[0]
        pair = [first, second]
        self.rng.shuffle(pair)
        return pair[0], pair[1]

    def provider(self, entry: ModelEntry) -> Provider:
        endpoint = self.rng.choice(entry.endpoints)
        return OpenAIProvider(
            self.client, endpoint, self.config.timeouts, think_tags=entry.think_tags
        )
