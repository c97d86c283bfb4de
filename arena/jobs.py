"""Periodic jobs that run once across every app process sharing a database.

Each job has a row in `leases`. A process runs a job only after it takes that row: the lease is
free (expired, or never taken) and the last run finished at least one interval ago. Taking it is
one compare-and-set UPDATE, so it holds on SQLite and PostgreSQL alike, and a process that dies
mid-run loses the lease when `ttl` runs out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from arena import db

log = logging.getLogger(__name__)

# A job whose interval is longer still checks this often whether it is due, so a run missed by
# one process (it died, it was busy) is picked up soon by another.
MAX_TICK = 30.0


def holder_id() -> str:
    """Names this process in the lease table: readable for an operator, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"[:64]


def _now() -> datetime:
    return datetime.now(UTC)


class Lease:
    def __init__(self, engine: Engine, name: str, holder: str, ttl: timedelta) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder
        self.ttl = ttl

    def acquire(self, every: timedelta | None = None) -> bool:
        """Take the lease if it is free and, with `every`, the last run finished at least that
        long ago. True if this call took it (or this holder already held it)."""
        t = _now()
        table = db.leases
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        table.insert().values(
                            name=self.name, holder=self.holder, expires_at=t + self.ttl
                        )
                    )
                return True
            except sa.exc.IntegrityError:
                pass  # the row exists: compete for it below
            free = sa.or_(
                table.c.expires_at.is_(None),
                table.c.expires_at < t,
                table.c.holder == self.holder,
            )
            due = (
                sa.true()
                if every is None
                else sa.or_(table.c.finished_at.is_(None), table.c.finished_at <= t - every)
            )
            taken = conn.execute(
                table.update()
                .where(table.c.name == self.name, free, due)
                .values(holder=self.holder, expires_at=t + self.ttl)
            ).rowcount
        return taken == 1

    def renew(self) -> bool:
        """Push the expiry out by `ttl` while this holder still holds the lease."""
        table = db.leases
        with self.engine.begin() as conn:
            renewed = conn.execute(
                table.update()
                .where(table.c.name == self.name, table.c.holder == self.holder)
                .values(expires_at=_now() + self.ttl)
            ).rowcount
        return renewed == 1

    def release(self) -> None:
        """Give the lease back and record the run as finished (failed runs too: the next try
        waits a full interval instead of hammering a broken database)."""
        table = db.leases
        with self.engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.name == self.name, table.c.holder == self.holder)
                .values(holder=None, expires_at=None, finished_at=_now())
            )

    def holder_now(self) -> tuple[str, datetime] | None:
        """Who holds the lease now and until when, if anyone (for messages)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(db.leases.c.holder, db.leases.c.expires_at).where(
                    db.leases.c.name == self.name
                )
            ).first()
        if row is None or row.expires_at is None or row.holder is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        return (str(row.holder), expires) if expires > _now() else None


@dataclass(frozen=True)
class Job:
    """`run` is awaited on the event loop: heavy work belongs in a thread or a process."""

    name: str
    every: float  # seconds between runs; 0 turns the job off
    run: Callable[[], Awaitable[object]]
    ttl: float  # lease length, renewed every ttl/3 while the run lasts


class Jobs:
    """Runs each job every `job.every` seconds, once across all processes."""

    def __init__(self, engine: Engine, jobs: Sequence[Job], holder: str | None = None) -> None:
        self.engine = engine
        self.all = list(jobs)
        self.jobs = [j for j in jobs if j.every > 0]  # those run on a schedule
        self.holder = holder or holder_id()
        self._tasks: list[asyncio.Task[None]] = []
        self._extra: set[asyncio.Task[Any]] = set()

    def job(self, name: str) -> Job:
        return next(j for j in self.all if j.name == name)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a one-off run (an administrator's) until it ends; `stop` cancels it."""
        self._extra.add(task)
        task.add_done_callback(self._extra.discard)

    def lease(self, job: Job) -> Lease:
        return Lease(self.engine, job.name, self.holder, timedelta(seconds=job.ttl))

    async def run_once(self, job: Job, *, force: bool = False) -> bool:
        """Run `job` if this process takes its lease (and, unless `force`, it is due)."""
        lease = self.lease(job)
        every = None if force else timedelta(seconds=job.every)
        if not await asyncio.to_thread(lease.acquire, every):
            return False
        # A short lease kept alive while the run lasts: a run may take as long as it needs,
        # and one whose process died blocks the next for one `ttl` at most.
        keeper = asyncio.create_task(self._keep(lease))
        try:
            await job.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one line: the job's own error says what failed
            log.error("job %s failed: %s", job.name, str(err) or type(err).__name__)
        finally:
            keeper.cancel()
            await asyncio.shield(asyncio.to_thread(lease.release))
        return True

    @staticmethod
    async def _keep(lease: Lease) -> None:
        while True:
            await asyncio.sleep(lease.ttl.total_seconds() / 3)
            try:
                await asyncio.to_thread(lease.renew)
            except Exception as err:  # the next renewal may get through
                log.warning("lease %s: renewal failed: %s", lease.name, err)

    async def _loop(self, job: Job) -> None:
        tick = min(job.every, MAX_TICK)
        while True:
            try:
                await self.run_once(job)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the lease table itself failed: try again next tick
                log.error("job %s: cannot take its lease: %s", job.name, err)
            # Jitter, so processes started together do not all knock at once.
            await asyncio.sleep(tick * random.uniform(0.8, 1.2))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(job)) for job in self.jobs]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._extra]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
