"""Replicas of one model behind one `Provider` (issue 7).

An `EndpointPool` sends each request to the healthy replica with the fewest requests in flight
for its weight, holds each replica to its cap (a request waits up to `queue_seconds` for room),
and retries once, on another replica, a request that failed before its first token. Once text
has streamed a failure is final: a retry would send the voter, and the database, a second
answer spliced onto the first.

Health is kept per replica, shared by every pool that names the same server and model (a base
model and its best-of-N variant count against one cap). A background loop (`watch_health`)
checks each replica's health path; a replica that fails a check, or refuses a connection, is
skipped and checked again after 1, 2, 4 ... seconds, up to `backoff_max_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from arena.config import Endpoint, RoutingConfig
from arena.errors import (
    ConnectError,
    EndpointBusy,
    FirstTokenTimeout,
    NoEndpoint,
    ProviderError,
    ServerFailed,
    StreamBroken,
)
from arena.providers.base import ChatRequest, Chunk, Provider

log = logging.getLogger(__name__)

BACKOFF_START = 1.0  # seconds before an unhealthy replica is checked again, doubling


@dataclass(eq=False)
class Slots:
    """Requests in flight on one server. Shared by the old and the new `Replica` when a registry
    reload rebuilds it, so that the cap counts the requests the old one still serves."""

    taken: int = 0


@dataclass(eq=False)
class Replica:
    """One server of one model and what this process knows of it."""

    endpoint: Endpoint
    provider: Provider
    cap: int
    health_url: str
    headers: dict[str, str] = field(default_factory=dict)
    slots: Slots = field(default_factory=Slots)
    healthy: bool = True  # until a check or a refused connection says otherwise
    failures: int = 0  # checks failed in a row
    next_check: float = 0.0  # monotonic time of the next health check

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def in_flight(self) -> int:
        return self.slots.taken

    def mark_down(self, why: str, now: float, backoff_max: float, checked: bool = True) -> None:
        """Skip this replica until a health check finds it well. Only checks lengthen the
        backoff: eight samples of one best-of-8 failing at once are one outage, not eight
        (review of issue 7)."""
        if not checked and not self.healthy:
            return
        if self.healthy:
            log.warning("endpoint %s is down (%s); requests skip it", self.name, why)
        self.healthy = False
        self.failures += 1
        self.next_check = now + min(backoff_max, BACKOFF_START * 2 ** (self.failures - 1))

    def mark_up(self, now: float, interval: float) -> None:
        if not self.healthy:
            log.warning("endpoint %s is back", self.name)
        self.healthy = True
        self.failures = 0
        self.next_check = now + interval


def _replica_fault(err: ProviderError) -> bool:
    """Does this failure say the replica is unwell (rather than the request bad)? A replica
    that fails fast must be marked down at once: with the fewest requests in flight it would
    otherwise draw every new request (bench.router, issue 7)."""
    return isinstance(err, ConnectError | FirstTokenTimeout | ServerFailed | StreamBroken)


class EndpointPool:
    """A `Provider` over the replicas of one model."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        routing: Callable[[], RoutingConfig],
        rng: random.Random | None = None,
        freed: asyncio.Event | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("a pool needs at least one replica")
        self.replicas = tuple(replicas)
        self.routing = routing  # read per request: a registry reload changes the settings
        self.rng = rng or random.Random()
        # Set whenever a request ends anywhere: pools that share replicas share this event, so
        # a request queued in one wakes when a slot frees through another.
        self.freed = freed or asyncio.Event()

    @property
    def available(self) -> bool:
        """Is any replica healthy? A model with none is not drawn for new battles."""
        return any(r.healthy for r in self.replicas)

    def _pick(self, exclude: Iterable[Replica]) -> Replica | None:
        """The healthy replica with room and the fewest requests in flight for its weight;
        a tie goes to a weighted draw, so equal replicas share the load."""
        skip = set(exclude)
        free = [r for r in self.replicas if r.healthy and r not in skip and r.in_flight < r.cap]
        if not free:
            return None
        least = min(r.in_flight / r.endpoint.weight for r in free)
        tied = [r for r in free if r.in_flight / r.endpoint.weight == least]
        return self.rng.choices(tied, weights=[r.endpoint.weight for r in tied])[0]

    async def _acquire(self, exclude: Sequence[Replica]) -> Replica:
        deadline = time.monotonic() + self.routing().queue_seconds
        while True:
            if not any(r.healthy and r not in exclude for r in self.replicas):
                raise NoEndpoint("No server for this model is available right now.")
            replica = self._pick(exclude)
            if replica is not None:
                replica.slots.taken += 1
                return replica
            left = deadline - time.monotonic()
            if left <= 0:
                raise EndpointBusy("The model is busy right now. Please try again shortly.")
            self.freed.clear()  # no await since the pick: no release can be missed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.freed.wait(), min(left, HEALTH_TICK))

    def _release(self, replica: Replica) -> None:
        replica.slots.taken -= 1
        self.freed.set()

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        tried: list[Replica] = []
        while True:
            replica = await self._acquire(tried)
            tried.append(replica)
            streamed = False
            try:
                yield Chunk(endpoint=replica.name)
                async for chunk in replica.provider.stream_chat(request):
                    if chunk.content or chunk.reasoning:
                        streamed = True
                    yield chunk
                return
            except ProviderError as err:
                routing = self.routing()
                if _replica_fault(err):
                    replica.mark_down(
                        type(err).__name__, time.monotonic(), routing.backoff_max_seconds, False
                    )
                others = any(r.healthy and r not in tried for r in self.replicas)
                if streamed or not routing.retry or len(tried) > 1 or not others:
                    raise
                log.warning(
                    "endpoint %s failed before its first token (%s); retrying on another",
                    replica.name,
                    err,
                )
            finally:
                self._release(replica)


async def check(client: httpx.AsyncClient, replica: Replica, routing: RoutingConfig) -> None:
    """One health check: any HTTP answer below 500 says the server is up (a 401 or 404 on the
    health path still means it answers; the request itself reports a wrong key or model)."""
    now = time.monotonic()
    try:
        response = await client.get(
            replica.health_url, headers=replica.headers, timeout=routing.health_timeout
        )
    except Exception as err:  # not only httpx.HTTPError: a bad URL raises others
        replica.mark_down(type(err).__name__, now, routing.backoff_max_seconds)
        return
    if response.status_code >= 500:
        replica.mark_down(f"HTTP {response.status_code}", now, routing.backoff_max_seconds)
    else:
        replica.mark_up(now, routing.health_seconds)


HEALTH_TICK = 0.5  # seconds between looks for replicas due a check


async def watch_health(
    client: httpx.AsyncClient,
    replicas: Callable[[], Iterable[Replica]],
    routing: Callable[[], RoutingConfig],
) -> None:
    """Check every replica when it is due, for as long as the process runs."""
    while True:
        try:
            now = time.monotonic()
            due = [r for r in replicas() if r.next_check <= now]
            if due:
                config = routing()
                for r in due:  # not checked twice while a slow check runs
                    r.next_check = now + config.health_timeout + HEALTH_TICK
                await asyncio.gather(*(check(client, r, config) for r in due))
        except Exception:  # the loop must outlive any one bad round (review of issue 7)
            log.exception("health checks failed this round; trying again")
        await asyncio.sleep(HEALTH_TICK)
