"""Who is asking: the voter cookie, the client's address, hashing, bans and abuse limits.

Everything that decides a voter's identity lives here (issue 8, §2), so that the page, the
scripted API and the battle service agree on it:

- The voter cookie is `<id>.<signature>`, an HMAC of a server-made id under the deployment's
  secret key. A cookie that does not verify is ignored, never stored: nobody can pick their id.
- The client address is the socket's peer, unless that peer is a configured trusted proxy; only
  then is `X-Forwarded-For` read, from the right, past every trusted hop.
- Raw addresses never leave this module: the rest of Arena sees an HMAC of them.
- Limits count actions per voter and per address in a moving window, with the `limits` library;
  in this process by default, in Redis (`ARENA_REDIS_URL`) when several processes share them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from arena.config import LimitsConfig
from arena.errors import Banned, ConfigError, RateLimited

log = logging.getLogger(__name__)

VOTER_COOKIE = "arena_voter"
COOKIE_MAX_AGE = 365 * 24 * 3600
# The id of a voter without a valid cookie starts with this: it is one page session's only.
SESSION_VOTER = "s-"
_SIG_CHARS = 22  # 132 bits of an HMAC-SHA256, base64url
BAN_REFRESH = 10.0  # seconds a process may serve with a stale copy of the ban list


@dataclass(frozen=True)
class Voter:
    """A voter as the battle service sees them: an id and a salted hash of their address."""

    id: str
    ip_hash: str | None = None


class Action(StrEnum):
    PROMPT = "prompt"
    BATTLE = "battle"
    VOTE = "vote"


# What a voter is told when a limit is hit: the action in words, and the window's name.
_ACTION_TEXT = {
    Action.PROMPT: ("prompt", "a minute"),
    Action.BATTLE: ("new battle", "an hour"),
    Action.VOTE: ("vote", "a day"),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"[security] trusted_proxies: {entry!r} is not an IP address or CIDR range"
            ) from None
    return tuple(out)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class Limits:
    """Moving-window counters per (action, voter) and (action, address)."""

    def __init__(self, config: Callable[[], LimitsConfig], storage: Storage) -> None:
        self._config = config  # read on every check: a registry reload changes the limits
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self._warned = 0.0

    def _items(self, action: Action) -> tuple[RateLimitItem | None, RateLimitItem | None]:
        c = self._config()
        per_voter, per_ip = {
            Action.PROMPT: (c.prompts_per_minute_voter, c.prompts_per_minute_ip),
            Action.BATTLE: (c.battles_per_hour_voter, c.battles_per_hour_ip),
            Action.VOTE: (c.votes_per_day_voter, c.votes_per_day_ip),
        }[action]
        window = {Action.PROMPT: "minute", Action.BATTLE: "hour", Action.VOTE: "day"}[action]
        return (
            parse(f"{per_voter}/{window}") if per_voter else None,
            parse(f"{per_ip}/{window}") if per_ip else None,
        )

    async def hit(self, voter: Voter, *actions: Action) -> None:
        """Count one of each action, or raise `RateLimited` and count nothing."""
        checks: list[tuple[Action, RateLimitItem, str, str]] = []
        for action in actions:
            per_voter, per_ip = self._items(action)
            if per_voter:
                checks.append((action, per_voter, "voter", voter.id))
            if per_ip and voter.ip_hash:
                checks.append((action, per_ip, "ip", voter.ip_hash))
        try:
            for action, item, kind, key in checks:
                if not await self.limiter.test(item, action.value, kind, key):
                    stats = await self.limiter.get_window_stats(item, action.value, kind, key)
                    raise RateLimited(_limit_message(action, item, kind, stats.reset_time))
            for action, item, kind, key in checks:
                await self.limiter.hit(item, action.value, kind, key)
        except RateLimited:
            raise
        except Exception as err:  # the counter store is down: serve rather than refuse all
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("rate limits not counted: %s: %s", type(err).__name__, err)


def _limit_message(action: Action, item: RateLimitItem, kind: str, reset_at: float) -> str:
    what, window = _ACTION_TEXT[action]
    what = what if item.amount == 1 else what + "s"
    wait = max(1, math.ceil(reset_at - time.time()))
    if wait >= 3600:
        when = f"{math.ceil(wait / 3600)} h"
    elif wait >= 60:
        when = f"{math.ceil(wait / 60)} min"
    else:
        when = f"{wait} s"
    who = "from your network" if kind == "ip" else "per person"
    return (
        f"Slow down: this arena takes at most {item.amount} {what} {window} {who}. "
        f"Please try again in {when}."
    )


def limit_storage(redis_url: str | None) -> Storage:
    """Counters in this process, or in Redis shared by every arena process. A `prefix` query
    parameter (`redis://host:6379/0?prefix=arena1`) keeps two arenas on one Redis apart."""
    if not redis_url:
        return MemoryStorage()
    if not redis_url.startswith(("redis://", "rediss://", "redis+unix://")):
        raise ConfigError(
            f"ARENA_REDIS_URL must be a redis:// URL, got {redis_url.split(':')[0]}:…"
        )
    parts = urlsplit(redis_url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", ["arena"])[-1]
    url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    storage = storage_from_string("async+" + url, implementation="redispy", key_prefix=prefix)
    assert isinstance(storage, Storage)
    return storage


class Identity:
    """Built once in `create_app`; see the module docstring."""

    def __init__(
        self,
        *,
        secret_key: bytes,
        ip_salt: bytes,
        trusted_proxies: Iterable[str] = (),
        limits: Limits | None = None,
        banned: Callable[[], set[str]] | None = None,
    ) -> None:
        self._key = secret_key
        self._salt = ip_salt
        self._trusted = _networks(trusted_proxies)
        self.limits = limits
        self._load_bans = banned
        self._bans: set[str] = set()
        self._bans_at = -math.inf
        self._bans_lock = threading.Lock()

    # -- cookie -------------------------------------------------------------------------------

    def _sign(self, voter_id: str) -> str:
        mac = hmac.new(self._key, b"voter:" + voter_id.encode(), hashlib.sha256).digest()
        return _b64(mac)[:_SIG_CHARS]

    def new_cookie(self) -> str:
        voter_id = secrets.token_urlsafe(16)
        return f"{voter_id}.{self._sign(voter_id)}"

    def verify_cookie(self, value: str | None) -> str | None:
        """The voter id a cookie carries, or None when it is missing or forged."""
        if not value or len(value) > 64 or value.count(".") != 1:
            return None
        voter_id, sig = value.split(".")
        if not voter_id or not hmac.compare_digest(sig, self._sign(voter_id)):
            return None
        return voter_id

    # -- address ------------------------------------------------------------------------------

    def _trusted_peer(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self._trusted)

    def client_ip(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The socket peer, or, when the peer is a trusted proxy, the nearest address in
        X-Forwarded-For that is not one."""
        address = _address(peer) if peer else None
        if address is None or not self._trusted or not self._trusted_peer(address):
            return str(address) if address else None
        forwarded = headers.get("x-forwarded-for", "")
        hops = [a for a in (_address(h) for h in forwarded.split(",")) if a is not None]
        for hop in reversed(hops):
            address = hop
            if not self._trusted_peer(hop):
                break
        return str(address)

    def ip_hash(self, ip: str | None) -> str | None:
        if not ip:
            return None
        return hmac.new(self._salt, ip.encode(), hashlib.sha256).hexdigest()

    def voter(
        self,
        cookies: Mapping[str, str],
        peer: str | None,
        headers: Mapping[str, str],
        session: str | None = None,
    ) -> Voter:
        """The voter behind a request. Without a valid cookie (a script, or a forged value) the
        voter is the page session, hashed so that its id is not the caller's choice either."""
        voter_id = self.verify_cookie(cookies.get(VOTER_COOKIE))
        if voter_id is None:
            basis = session or secrets.token_urlsafe(16)
            voter_id = SESSION_VOTER + self._sign("session:" + basis)
        return Voter(id=voter_id, ip_hash=self.ip_hash(self.client_ip(peer, headers)))

    # -- bans and limits ----------------------------------------------------------------------

    def banned(self, voter: Voter) -> bool:
        if self._load_bans is None or voter.ip_hash is None:
            return False
        if time.monotonic() - self._bans_at > BAN_REFRESH:
            with self._bans_lock:
                if time.monotonic() - self._bans_at > BAN_REFRESH:
                    self._bans = self._load_bans()
                    self._bans_at = time.monotonic()
        return voter.ip_hash in self._bans

    def forget_bans(self) -> None:
        """Read the ban list again at the next check (after an administrator changed it)."""
        self._bans_at = -math.inf

    async def admit(self, voter: Voter, *actions: Action) -> None:
        """Raise `Banned` or `RateLimited` unless this voter may take these actions now; count
        them when they may."""
        if self.banned(voter):
            raise Banned("This arena is not accepting prompts or votes from your network.")
        if self.limits is not None:
            await self.limits.hit(voter, *actions)
