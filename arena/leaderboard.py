"""Reading snapshots: what the leaderboard tab and the export API show.

Snapshots hold every model under its registry name. What the public sees is decided here, at read
time, from the registry as it is now: unreleased models are left out (and the ranks of the others
recomputed without them, so no gap gives them away), retired ones and models the registry no
longer lists are "deprecated", and a model under `leaderboard.min_votes` votes is preliminary.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from arena import db
from arena.config import ArenaConfig
from arena.ratings_job import OVERALL

# The columns of a public leaderboard row, in the order the CSV writes them.
ROW_FIELDS = (
    "rank_ub",
    "rank_lb",
    "model",
    "rating",
    "lower",
    "upper",
    "votes",
    "preliminary",
    "win_rate",
    "median_tokens",
    "mean_tokens",
    "family",
    "organization",
    "license",
    "deprecated",
)


@dataclass(frozen=True)
class Snapshot:
    id: int
    created_at: datetime
    payload: Mapping[str, Any]

    def meta(self) -> dict[str, Any]:
        """The snapshot's description, without its rows and matrices."""
        p = self.payload
        return {
            "id": self.id,
            "run_id": p["run_id"],
            "created_at": p["created_at"],
            "category": p["category"],
            "style_control": p["style_control"],
            "cutoff": p["cutoff"],
            "params": p["params"],
            "stages": p["stages"],
            "votes_total": p["votes_total"],
            "votes_counted": p["votes_counted"],
            "votes": p["votes"],
            "duration_ms": p["duration_ms"],
            "groups": p.get("groups", 1),
            "position": p["position"],
            "style": p["style"],
        }


@dataclass(frozen=True)
class ModelCard:
    name: str
    organization: str
    license: str
    description: str
    rating_only: bool  # known only from imported votes: never drawn for a battle
    retired: bool
    family: str = ""  # variants of the same weights: one curve on the compute chart


def model_cards(config: ArenaConfig, rated: Mapping[str, tuple[str, str]]) -> dict[str, ModelCard]:
    """Public cards: registry models that are not unreleased, then rating-only models."""
    cards: dict[str, ModelCard] = {}
    for m in config.models:
        if not m.unreleased:
            cards[m.name] = ModelCard(
                m.name,
                m.organization,
                m.license,
                m.description,
                False,
                m.retired,
                m.family or m.name,
            )
    for name, (organization, license_) in rated.items():
        if config.find(name) is None:
            cards[name] = ModelCard(name, organization, license_, "", True, False, name)
    return cards


def public_rows(
    snapshot: Snapshot,
    config: ArenaConfig,
    cards: Mapping[str, ModelCard],
    *,
    show_deprecated: bool = False,
) -> list[dict[str, Any]]:
    """The rows the public may see. Hidden models never reach a board (the job's
    `hidden_model` stage); the check here is a second lock, for a model hidden since."""
    hidden = {m.name for m in config.models if m.unreleased}
    rows = []
    for row in snapshot.payload["rows"]:
        name = row["model"]
        if name in hidden:
            continue
        card = cards.get(name)
        deprecated = card is None or card.retired
        if deprecated and not show_deprecated:
            continue
        rows.append(
            {
                **row,
                "preliminary": row["votes"] < config.leaderboard.min_votes,
                # A snapshot from before mean tokens were counted has none: shown as unknown.
                "mean_tokens": row.get("mean_tokens"),
                "family": card.family if card else name,
                "organization": card.organization if card else "",
                "license": card.license if card else "",
                "deprecated": deprecated,
            }
        )
    # Ranks as fitted: the job leaves hidden models out of every board, so none of them left
    # a gap to close here.
    rows.sort(key=lambda r: (r["rank_ub"], -r["rating"]))
    return rows


def public_matrices(snapshot: Snapshot, names: list[str]) -> dict[str, Any]:
    """The snapshot's matrices restricted to `names`, in that order."""
    index = {m: i for i, m in enumerate(snapshot.payload["models"])}
    keep = [index[n] for n in names if n in index]
    out: dict[str, Any] = {"models": [snapshot.payload["models"][i] for i in keep]}
    for key, m in snapshot.payload["matrices"].items():
        out[key] = [[m[i][j] for j in keep] for i in keep]
    return out


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class SnapshotReader:
    """Reads snapshots and keeps the recent ones decoded: a snapshot never changes, so a cache
    keyed by id is always right. Which id is the latest is asked of the database at most once
    a second per board."""

    LATEST_TTL = 1.0

    def __init__(self, engine: Engine, cache_size: int = 64) -> None:
        self.engine = engine
        self._cache = LRU(cache_size)
        self._latest: dict[tuple[str, bool], tuple[float, int | None]] = {}
        # Rendered responses per (kind, snapshot id, format), for the export API.
        self.responses = LRU(4 * cache_size)

    def _decode(self, row: Any) -> Snapshot:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        return Snapshot(row.id, created, json.loads(gzip.decompress(row.payload)))

    def get(self, snapshot_id: int) -> Snapshot | None:
        hit = self._cache.get(snapshot_id)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(db.snapshots).where(db.snapshots.c.id == snapshot_id)
            ).first()
        if row is None:
            return None
        snap = self._decode(row)
        self._cache.put(snapshot_id, snap)
        return snap

    def latest_id(self, category: str = OVERALL, style_control: bool = False) -> int | None:
        """The board of the newest run only: a board the newest run no longer has (a
        language under its threshold now) is not served from an older run."""
        key = (category, style_control)
        now = time.monotonic()
        hit = self._latest.get(key)
        if hit is not None and now - hit[0] < self.LATEST_TTL:
            return hit[1]
        s = db.snapshots.c
        newest_run = sa.select(s.run_id).order_by(s.id.desc()).limit(1).scalar_subquery()
        with self.engine.connect() as conn:
            value = conn.scalar(
                sa.select(s.id).where(
                    s.run_id == newest_run, s.category == category, s.style_control == style_control
                )
            )
        if value is None:
            return None  # not cached: a new board shows as soon as it is written
        self._latest[key] = (now, int(value))
        return int(value)

    def latest(self, category: str = OVERALL, style_control: bool = False) -> Snapshot | None:
        snapshot_id = self.latest_id(category, style_control)
        return None if snapshot_id is None else self.get(snapshot_id)

    def categories(self) -> list[str]:
        """The boards of the latest run, in the order the job wrote them."""
        snap = self.latest()
        return list(snap.payload["categories"]) if snap else []

    def page(self, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Snapshot descriptions, newest first, with id < `before`."""
        s = db.snapshots.c
        query = sa.select(s.id, s.run_id, s.created_at, s.category, s.style_control, s.votes)
        if before is not None:
            query = query.where(s.id < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(s.id.desc()).limit(limit)).all()
        return [
            {
                "id": r.id,
                "run_id": r.run_id,
                "created_at": (
                    r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
                ).isoformat(),
                "category": r.category,
                "style_control": bool(r.style_control),
                "votes": r.votes,
            }
            for r in rows
        ]


def leaderboard_document(engine: Engine, config: ArenaConfig, snap: Snapshot) -> dict[str, Any]:
    """What `/api/v1/leaderboard` and `arena export leaderboard` give: the snapshot's
    description and its public rows."""
    rows = public_rows(snap, config, model_cards(config, rated_models(engine)))
    return {"snapshot": snap.meta(), "rows": [{k: r[k] for k in ROW_FIELDS} for r in rows]}


def rows_csv(rows: list[dict[str, Any]], fields: tuple[str, ...] = ROW_FIELDS) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:  # booleans as the battle CSV writes them
        writer.writerow({k: str(v).lower() if isinstance(v, bool) else v for k, v in row.items()})
    return out.getvalue().encode("utf-8")


def rated_models(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.rated_models)).all()
    return {r.name: (r.organization, r.license) for r in rows}
