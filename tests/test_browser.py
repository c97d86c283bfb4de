"""UI promises in a real browser: headless Chromium driven by Playwright.

Skips where Chromium is not installed (Debian package `chromium`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from arena import db
from tests.servers import DEMO_MODELS, demo_config_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


@pytest.fixture
def page() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def test_battle_in_browser(arena_server, slow_demo_url: str, sqlite_url: str, page) -> None:  # type: ignore[no-untyped-def]
    # Two reasoning models on the slow server, so the thinking indicator is on screen.
    registry = demo_config_data(slow_demo_url, {"r-one": "reasoner", "r-two": "reasoner"})
    url, recorder = arena_server(registry)
    page.goto(url + "/")
    assert page.locator("#vote-a").count() == 0 or not page.locator("#vote-a").is_visible()
    page.locator("#prompt textarea").fill("Why do leaves change colour?")
    page.locator("#prompt textarea").press("Enter")  # Enter submits like Send
    page.get_by_text("Thinking…").first.wait_for(timeout=20_000)
    assert not page.locator("#vote-a").is_visible()  # no vote while answering
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
    for button in ("#vote-b", "#vote-tie", "#vote-both-bad"):
        assert page.locator(button).is_visible()
    assert not page.locator('#chat-a button[aria-label="Clear"]').is_visible()
    body = page.locator("body").inner_text()
    assert "Thought for" in body and "The user asks" not in body  # reasoning text withheld
    for name in ("r-one", "r-two"):
        assert name not in body and name not in recorder.text()

    page.locator("#vote-tie").click()
    reveal = page.locator("#reveal")
    reveal.get_by_text("Your vote: Tie").wait_for(timeout=20_000)
    assert "r-one" in reveal.inner_text() and "r-two" in reveal.inner_text()
    assert not page.locator("#vote-a").is_visible()
    # Reasoning arrives collapsed: its title shows, its text opens on a click.
    title = page.get_by_text("Reasoning ·").first
    title.wait_for(timeout=10_000)
    assert not page.get_by_text("The user asks").first.is_visible()
    title.click()
    page.get_by_text("The user asks").first.wait_for(state="visible", timeout=10_000)

    # The browser's voter id is the anonymous cookie's id (before its signature), not a per-tab
    # session id.
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "arena_voter")
    cookie = cookie.split(".")[0]
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        voter_id, ip_hash = conn.execute(sa.select(db.voters.c.id, db.voters.c.ip_hash)).one()
        outcome = conn.execute(sa.select(db.votes.c.outcome)).scalar_one()
    assert (voter_id, outcome) == (cookie, "tie")
    assert ip_hash and "127.0.0.1" not in ip_hash

    page.locator("#new-battle").click()
    reveal.wait_for(state="hidden", timeout=10_000)
    assert page.locator("#prompt textarea").is_enabled()


def test_unused_models_stay_hidden(arena_server, demo_url: str, page) -> None:  # type: ignore[no-untyped-def]
    url, recorder = arena_server(demo_config_data(demo_url, DEMO_MODELS))
    page.goto(url + "/")
    page.locator("#prompt textarea").fill("hello")
    page.locator("#send").click()
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
    html = page.content()
    for name in DEMO_MODELS:
        assert name not in html and name not in recorder.text()


def test_new_battle_while_streaming(  # type: ignore[no-untyped-def]
    arena_server, slow_demo_url: str, sqlite_url: str, page
) -> None:
    url, _ = arena_server(demo_config_data(slow_demo_url, {"x": "verbose", "y": "reasoner"}))
    page.goto(url + "/")
    page.locator("#prompt textarea").fill("FIRST question")
    page.locator("#prompt textarea").press("Enter")
    page.get_by_text("Both models are answering").wait_for(timeout=20_000)
    page.locator("#new-battle").click()
    # The voter types at once: the first battle's stop must not reach the second (issue 9).
    page.locator("#prompt textarea").fill("SECOND question")
    page.locator("#send").click()
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(1500)  # anything still streaming from the first would land now
    panes = page.locator("#chat-a").inner_text() + page.locator("#chat-b").inner_text()
    assert "SECOND question" in panes and "FIRST question" not in panes
    assert page.locator("#vote-a").is_visible()
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(db.battles.c.status).order_by(db.battles.c.created_at)
        ).scalars()
        assert list(rows) == ["abandoned", "awaiting_vote"]


def test_leaderboard_tab_renders_a_snapshot(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, sqlite_url: str, page
) -> None:
    from arena.categories import Tags
    from arena.config import parse_config
    from arena.lifecycle import Outcome
    from arena.ratings_job import compute
    from arena.store import Store
    from tests.test_leaderboard import play

    names = {"lb-strong": "terse", "lb-middle": "verbose", "lb-weak": "reasoner"}
    registry = demo_config_data(demo_url, {**names, "lb-secret": "thinker"})
    registry["models"][3]["unreleased"] = True
    registry["leaderboard"] = {"min_votes": 15}
    store = Store(db.make_engine(sqlite_url))
    coding = Tags(frozenset({"coding"}), "en")
    for k in range(12):
        tags = coding if k % 2 else None
        for a, b in (
            ("lb-strong", "lb-middle"),
            ("lb-middle", "lb-weak"),
            ("lb-secret", "lb-strong"),
        ):
            play(store, a, b, Outcome.A, prompt=f"prompt {k}", tags=tags, text_a="**x**\n- y")
    compute(store.engine, parse_config(registry))
    url, recorder = arena_server(registry)
    page.goto(url + "/")
    page.get_by_role("tab", name="Leaderboard").click()
    table = page.locator("#leaderboard-table")
    # Gradio's table keeps hidden copies of its cells: wait on the text a person sees.
    page.wait_for_function(
        "document.querySelector('#leaderboard-table').innerText.includes('lb-strong')",
        timeout=20_000,
    )
    text = table.inner_text()
    assert text.index("lb-strong") < text.index("lb-middle") < text.index("lb-weak")
    assert "preliminary" in text  # 12-24 votes each, under min_votes = 15 for some
    footer = page.locator("#leaderboard-footer").inner_text()
    assert "Snapshot #" in footer and "votes" in footer
    assert page.locator("#leaderboard-intro").inner_text().startswith("How to read this")
    page.locator("#plot-ratings .js-plotly-plot").first.wait_for(timeout=20_000)
    assert page.locator(".js-plotly-plot").count() == 4
    # The unreleased model is nowhere: not on the page, not in any byte sent to it.
    assert "lb-secret" not in page.content() and "lb-secret" not in recorder.text()
    # Search narrows the table; a category with no votes empties it.
    page.locator("#lb-search input, #lb-search textarea").first.fill("weak")
    page.wait_for_timeout(1500)
    narrowed = table.inner_text()
    assert "lb-weak" in narrowed and "lb-strong" not in narrowed
    page.locator("#lb-search input, #lb-search textarea").first.fill("")
    page.locator("#lb-category input").first.click()
    page.get_by_role("option", name="Coding").click()
    page.wait_for_timeout(1500)
    coding_text = table.inner_text()
    assert "lb-strong" in coding_text and "lb-weak" in coding_text
    # 6 coding battles of each pair; those of the unreleased model are left out entirely.
    assert (
        "12 votes in this board, 24 counted in all (of 36)"
        in page.locator("#leaderboard-footer").inner_text()
    )
    page.locator("#lb-category input").first.click()
    page.get_by_role("option", name="Math").click()
    page.get_by_text("No votes in this board yet").wait_for(timeout=10_000)
    page.locator("#lb-style input").check()
    page.locator("#lb-category input").first.click()
    page.get_by_role("option", name="Overall").click()
    page.wait_for_timeout(1500)
    assert "lb-strong" in table.inner_text()
    assert "style control" in page.locator("#leaderboard-footer").inner_text()
