"""The export API under /api/v1, in process through httpx's ASGI transport, on real databases."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from arena.app import create_app
from arena.config import Settings, parse_config
from arena.lifecycle import Outcome
from arena.ratings_job import compute
from arena.store import Store
from tests.test_leaderboard import MODELS, play, registry


def next_link(response: httpx.Response) -> str | None:
    match = re.match(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match.group(1) if match else None


@pytest.fixture
def data() -> dict[str, Any]:
    d = registry(export={"page_size": 7, "max_page_size": 50})
    d["models"][0]["unreleased"] = True  # alpha: a codename, its weights' name never shown
    return d


@pytest.fixture
async def client(database_url: str, data: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database_url), config=parse_config(data), with_ui=False)
    transport = httpx.ASGITransport(app=app.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://arena.test") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


def fill(client: httpx.AsyncClient, votes: int = 20) -> Store:
    app = client.app  # type: ignore[attr-defined]
    for k in range(votes):
        a, b = MODELS[k % 4], MODELS[(k + 1) % 4]
        play(app.store, a, b, Outcome.A if k % 3 else Outcome.TIE, prompt=f"q{k}", voter=f"v{k}")
    compute(app.engine, app.config)
    return app.store


async def test_no_snapshot_yet_is_a_clear_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/leaderboard")
    assert r.status_code == 404
    assert r.json()["parameter"] == "category" and "no snapshot" in r.json()["error"]


async def test_leaderboard_json_and_csv(client: httpx.AsyncClient) -> None:
    fill(client)
    r = await client.get("/api/v1/leaderboard")
    assert r.status_code == 200 and "set-cookie" not in r.headers
    body = r.json()
    snap = body["snapshot"]
    assert {"id", "created_at", "cutoff", "params", "stages"} <= set(snap)
    assert snap["cutoff"]["vote_id"] is not None and snap["params"]["options"]["ci"] == "sandwich"
    rows = body["rows"]
    fields = {"model", "rating", "lower", "upper", "rank_ub", "rank_lb", "votes", "preliminary"}
    assert rows and all(fields <= set(row) for row in rows)
    assert [row["model"] for row in rows] and "alpha" not in {row["model"] for row in rows}
    assert rows[0]["rank_ub"] == 1
    r_csv = await client.get("/api/v1/leaderboard", params={"format": "csv"})
    assert r_csv.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(r_csv.text)))
    assert [p["model"] for p in parsed] == [row["model"] for row in rows]
    assert [float(p["rating"]) for p in parsed] == [row["rating"] for row in rows]
    styled = (await client.get("/api/v1/leaderboard", params={"style_control": "true"})).json()
    assert styled["snapshot"]["style_control"] is True and styled["snapshot"]["id"] != snap["id"]


async def test_etag_and_304(client: httpx.AsyncClient) -> None:
    fill(client)
    for path in ("/api/v1/leaderboard", "/api/v1/models", "/api/v1/battles"):
        r = await client.get(path)
        tag = r.headers["etag"]
        assert r.status_code == 200 and "max-age=" in r.headers["cache-control"]
        again = await client.get(path, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        other = await client.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "parameter", "status"),
    [
        ("/api/v1/leaderboard", {"category": "poetry"}, "category", 404),
        ("/api/v1/leaderboard", {"format": "xml"}, "format", 400),
        ("/api/v1/leaderboard", {"style_control": "maybe"}, "style_control", 400),
        ("/api/v1/leaderboard/snapshots/abc", {}, "snapshot_id", 400),
        ("/api/v1/leaderboard/snapshots/999999", {}, "snapshot_id", 404),
        ("/api/v1/leaderboard/snapshots", {"cursor": "!!"}, "cursor", 400),
        ("/api/v1/battles", {"cursor": "bm9wZQ"}, "cursor", 400),
        ("/api/v1/battles", {"limit": "0"}, "limit", 400),
        ("/api/v1/battles", {"limit": "51"}, "limit", 400),
        ("/api/v1/battles", {"since": "yesterday"}, "since", 400),
        ("/api/v1/battles", {"format": "parquet"}, "format", 400),
    ],
)
async def test_bad_parameters_are_named(
    client: httpx.AsyncClient, path: str, params: dict[str, str], parameter: str, status: int
) -> None:
    fill(client, votes=4)
    r = await client.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.json()["parameter"] == parameter and r.json()["error"]


async def test_battles_keyset_paging(client: httpx.AsyncClient) -> None:
    store = fill(client, votes=20)
    for fmt in ("jsonl", "csv"):
        url: str | None = f"/api/v1/battles?format={fmt}"
        seen: list[str] = []
        pages = 0
        while url:
            r = await client.get(url)
            assert r.status_code == 200
            if fmt == "jsonl":
                rows = [json.loads(line) for line in r.text.splitlines()]
            else:
                rows = list(csv.DictReader(io.StringIO(r.text)))
            seen += [row["question_id"] for row in rows]
            url = next_link(r)
            pages += 1
            assert len(rows) == 7 or url is None
        assert pages == 3 and len(seen) == len(set(seen)) == 20
    r = await client.get("/api/v1/battles", params={"limit": 50})
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert next_link(r) is None and len(rows) == 20
    text = r.text
    # No IP hashes and no voter ids: judges are a second, export-only hash.
    assert "ip_hash" not in text and not any(f'"v{k}"' in text for k in range(20))
    judges = {row["judge"] for row in rows}
    assert len(judges) == 20 and all(j.startswith("arena_user_") for j in judges)
    assert all("conversation_a" not in row or row["conversation_a"] is None for row in rows)
    # The unreleased model is exported under its codename, never its weights' name.
    assert "alpha" in text and "real/" not in text and store.count_votes() == 20
    later = await client.get("/api/v1/battles", params={"since": "2999-01-01T00:00:00Z"})
    assert later.status_code == 200 and later.text.strip() == ""


async def test_battle_export_content_only_when_enabled(
    database_url: str, data: dict[str, Any]
) -> None:
    data["export"]["include_content"] = True
    app = create_app(Settings(database_url=database_url), config=parse_config(data), with_ui=False)
    play(app.store, "beta", "gamma", Outcome.B, prompt="what is 2+2?", text_a="4", text_b="four")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.asgi), base_url="http://t"
    ) as c:
        row = json.loads((await c.get("/api/v1/battles")).text)
    assert row["conversation_a"] == [
        {"role": "user", "content": "what is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert row["winner"] == "model_b" and row["model_b"] == "gamma"


async def test_snapshot_history_and_models(client: httpx.AsyncClient) -> None:
    fill(client, votes=6)
    r = await client.get("/api/v1/leaderboard/snapshots", params={"limit": 5})
    items = r.json()["snapshots"]
    assert len(items) == 5 and next_link(r)
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    rest = await client.get(next_link(r) or "")
    assert {i["id"] for i in rest.json()["snapshots"]}.isdisjoint({i["id"] for i in items})
    one = (await client.get(f"/api/v1/leaderboard/snapshots/{items[-1]['id']}")).json()
    names = [row["model"] for row in one["rows"]]
    assert one["matrices"]["models"] == names and len(one["matrices"]["predicted"]) == len(names)
    assert "alpha" not in json.dumps(one)
    cards = (await client.get("/api/v1/models")).json()["models"]
    assert [c["name"] for c in cards] == ["beta", "gamma", "delta"]
    assert "real/" not in json.dumps(cards)


async def test_healthz_and_docs(client: httpx.AsyncClient) -> None:
    before = (await client.get("/healthz")).json()
    assert before == {"status": "ok", "snapshot": None}
    fill(client, votes=3)
    after = (await client.get("/healthz")).json()
    latest = client.app.snapshots.latest()  # type: ignore[attr-defined]
    assert latest is not None and after["snapshot"]["id"] == latest.id
    assert after["snapshot"]["created_at"] == latest.payload["created_at"]
    assert isinstance(after["snapshot_age_seconds"], float)
    docs = await client.get("/api/v1/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert {"/leaderboard", "/battles", "/models"} <= set(spec["paths"])


async def test_review_findings_stay_fixed(client: httpx.AsyncClient) -> None:
    """From the adversarial review of issue 6: each of these once gave a 500 or wrong data."""
    fill(client, votes=6)
    for path in (
        "/api/v1/leaderboard/snapshots/%C2%B2",  # a Unicode digit
        "/api/v1/leaderboard/snapshots/2147483648",
        "/api/v1/battles?cursor=djE6OTIyMzM3MjAzNjg1NDc3NTgwOA",  # v1:2**63
        "/api/v1/leaderboard/snapshots?cursor=djE6OTIyMzM3MjAzNjg1NDc3NTgwOA",
        "/api/v1/leaderboard?category=%00",
    ):
        r = await client.get(path)
        assert 400 <= r.status_code < 500 and r.json()["parameter"], (path, r.text)
    # The same instant with three offsets gives the same rows.
    rows = (await client.get("/api/v1/battles", params={"limit": 50})).text.splitlines()
    stamp = json.loads(rows[3])["tstamp"]
    from datetime import UTC, datetime, timedelta, timezone

    at = datetime.fromtimestamp(stamp, UTC)
    counts = set()
    for hours in (0, -5, 1):
        local = at.astimezone(timezone(timedelta(hours=hours))).isoformat()
        r = await client.get("/api/v1/battles", params={"since": local, "limit": 50})
        counts.add(len(r.text.splitlines()))
    # One answer for the three spellings (the exported tstamp is rounded to the millisecond,
    # so the row it came from may fall on either side).
    assert len(counts) == 1 and counts.pop() in (len(rows) - 3, len(rows) - 4)
    # HEAD works, a weak validator matches, and Link never echoes the Host header.
    head = await client.head("/api/v1/leaderboard")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"]
    weak = await client.get(
        "/api/v1/leaderboard", headers={"If-None-Match": "W/" + head.headers["etag"]}
    )
    assert weak.status_code == 304
    assert (await client.head("/healthz")).status_code == 200
    paged = await client.get("/api/v1/battles?limit=2", headers={"Host": "evil.example"})
    assert (
        next_link(
            paged,
        )
        is not None
        and "evil" not in paged.headers["link"]
    )
    assert paged.headers["link"].startswith("</api/v1/battles?")
    csv_text = (await client.get("/api/v1/leaderboard", params={"format": "csv"})).text
    assert "True" not in csv_text and ("true" in csv_text or "false" in csv_text)
