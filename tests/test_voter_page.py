"""The voter's slips, in headless Chromium (issue 9): a refused input leaves the battle as it
was, a reload gives the battle back, and the page says what it is doing.

Skips where Chromium is not installed (Debian package `chromium`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from arena import db
from tests.servers import demo_config_data
from tests.test_browser import CHROMIUM, FLAGS

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

TWO = {"contestant-xylo": "terse", "contestant-zeta": "verbose"}


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def new_page(browser: Any, width: int = 1280) -> Any:
    """A page in a fresh context: a voter of its own, with a cookie of its own."""
    return browser.new_context(viewport={"width": width, "height": 900}).new_page()


def send_prompt(page: Any, url: str, prompt: str) -> None:
    """Open the page and send `prompt` with Enter, as a voter does."""
    page.goto(url + "/")
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#prompt textarea").press("Enter")


def battle_to_vote(page: Any, url: str, prompt: str = "Why is the sky blue?") -> None:
    send_prompt(page, url, prompt)
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)


def panes(page: Any) -> str:
    return page.locator("#chat-a").inner_text() + page.locator("#chat-b").inner_text()


def error_badges(page: Any) -> int:
    """Gradio's red "Error" markers drawn over a component whose event failed."""
    badges = page.locator("[data-testid='status-tracker'] .error", has_text="Error")
    return int(badges.filter(visible=True).count())


def label(page: Any, side: str) -> str:
    return str(page.locator(f"#chat-{side} [data-testid='block-label']").inner_text()).strip()


def outcomes(database_url: str) -> list[tuple[str, str]]:
    with db.make_engine(database_url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(db.votes.c.battle_id, db.votes.c.outcome))]


def test_enter_on_nothing_mid_battle_keeps_the_battle(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, sqlite_url: str, browser
) -> None:
    url, _ = arena_server(demo_config_data(demo_url, TWO))
    page = new_page(browser)
    battle_to_vote(page, url)
    before = panes(page)
    box = page.locator("#prompt textarea")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/gradio_api/" in r.url else None)
    box.fill("   ")
    box.press("Enter")
    page.locator("#prompt-meter", has_text="Type a message first").wait_for(timeout=10_000)
    page.wait_for_timeout(500)  # a request sent anyway would have answered by now
    assert panes(page) == before and error_badges(page) == 0
    assert not [u for u in sent if "heartbeat" not in u]  # caught before any request
    assert page.locator("#vote-a").is_visible()
    page.locator("#vote-a").click()
    page.locator("#reveal").get_by_text("Your vote: A is better").wait_for(timeout=20_000)
    assert [o for _, o in outcomes(sqlite_url)] == ["a"]


def test_a_too_long_prompt_stays_in_the_box_with_the_reason(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, browser
) -> None:
    url, _ = arena_server(demo_config_data(demo_url, TWO, max_prompt_chars=50))
    page = new_page(browser)
    page.goto(url + "/")
    box = page.locator("#prompt textarea")
    box.fill("a" * 40)
    assert page.locator("#prompt-meter").inner_text() == "40 / 50"
    text = "too long " * 8
    box.fill(text)
    page.locator("#send").click()
    page.locator("#prompt-meter", has_text="Too long to send").wait_for(timeout=10_000)
    assert box.input_value() == text
    # Past the page's check, the server refuses it too, and the text is still kept.
    page.evaluate("document.getElementById('prompt-meter').remove()")
    box.press("Enter")
    page.get_by_text("That message is too long").wait_for(timeout=10_000)
    assert box.input_value() == text and error_badges(page) == 0
    box.fill("Short enough")
    box.press("Enter")
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)


def test_a_refusal_from_the_limits_is_a_message_not_a_broken_page(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, browser
) -> None:
    data = demo_config_data(demo_url, TWO)
    data["limits"] = {**data["limits"], "prompts_per_minute_voter": 1}
    url, _ = arena_server(data)
    page = new_page(browser)
    battle_to_vote(page, url)
    before = panes(page)
    page.locator("#prompt textarea").fill("A follow-up too soon")
    page.locator("#prompt textarea").press("Enter")
    page.get_by_text("Slow down").first.wait_for(timeout=10_000)  # the toast
    assert panes(page) == before and error_badges(page) == 0
    assert page.locator("#prompt textarea").input_value() == "A follow-up too soon"
    assert page.locator("#vote-b").is_visible()
    page.locator("#vote-b").click()
    page.locator("#reveal").wait_for(state="visible", timeout=20_000)


def test_a_reload_gives_the_battle_back_to_its_voter_only(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, sqlite_url: str, browser
) -> None:
    url, recorder = arena_server(demo_config_data(demo_url, TWO))
    page = new_page(browser)
    battle_to_vote(page, url, "What is entropy?")
    before = panes(page)
    page.reload()
    page.locator("#vote-a").wait_for(state="visible", timeout=20_000)
    assert panes(page) == before
    assert "Welcome back" in page.locator("#status").inner_text()
    for name in TWO:  # still anonymous
        assert name not in page.content()
    # Another voter (another cookie) gets an empty page, not this battle.
    other = new_page(browser)
    other.goto(url + "/")
    other.wait_for_timeout(2000)
    assert "What is entropy?" not in panes(other)
    assert not other.locator("#vote-a").is_visible()
    before_vote = recorder.text()  # everything the server sent before the vote
    assert all(name not in before_vote for name in TWO)
    # The vote from the reloaded page counts, from the keyboard.
    page.keyboard.press("Escape")  # out of the prompt box, which has the focus after a load
    page.keyboard.press("3")
    page.locator("#reveal").get_by_text("Your vote: Tie").wait_for(timeout=20_000)
    assert [o for _, o in outcomes(sqlite_url)] == ["tie"]
    page.reload()  # voted: the page starts afresh
    page.wait_for_timeout(2000)
    assert "What is entropy?" not in panes(page)


def test_after_the_vote_panes_carry_names_and_reasoning_is_collapsed(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, browser
) -> None:
    data = demo_config_data(demo_url, {"r-one": "reasoner", "short": "verbose"})
    data["models"][1]["params"] = {"max_tokens": 12}  # cut short by its token limit
    url, _ = arena_server(data)
    page = new_page(browser)
    battle_to_vote(page, url)
    thought = page.get_by_text("Thought for").first
    thought.click()  # a voter opening the reasoning before the vote finds nothing to open
    assert "The user asks" not in page.locator("body").inner_text()
    assert "cut short" not in panes(page)  # a length limit could hint at a model
    page.locator("#vote-a").click()
    page.locator("#reveal").wait_for(state="visible", timeout=20_000)
    labels = {label(page, side) for side in "ab"}
    assert labels in ({"Model A: r-one", "Model B: short"}, {"Model A: short", "Model B: r-one"})
    page.get_by_text("Reasoning ·").first.wait_for(timeout=10_000)
    assert not page.get_by_text("The user asks").first.is_visible()  # collapsed
    assert "cut short" in panes(page)
    page.locator("#new-battle").click()
    page.locator("#reveal").wait_for(state="hidden", timeout=10_000)
    assert (label(page, "a"), label(page, "b")) == ("Model A", "Model B")


def test_phone_width_battle(arena_server, demo_url: str, sqlite_url: str, browser) -> None:  # type: ignore[no-untyped-def]
    url, _ = arena_server(demo_config_data(demo_url, TWO))
    page = new_page(browser, width=390)
    battle_to_vote(page, url)
    page.locator("#vote-both-bad").dblclick()  # a double click votes once
    page.locator("#reveal").wait_for(state="visible", timeout=20_000)
    assert [o for _, o in outcomes(sqlite_url)] == ["both_bad"]
    assert error_badges(page) == 0


def test_a_page_opened_while_its_battle_streams_elsewhere_says_it_waits(  # type: ignore[no-untyped-def]
    arena_server, slow_demo_url: str, browser
) -> None:
    # A page whose process died reloads itself onto another process, which waits for the
    # battle still marked as answering: the page used to stay blank all that time (issue 10).
    url, _ = arena_server(demo_config_data(slow_demo_url, TWO))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    first = context.new_page()
    send_prompt(first, url, "A story, please")
    first.get_by_text("Both models are answering").wait_for(timeout=20_000)
    second = context.new_page()  # the same voter, while the first tab still streams
    second.goto(url + "/")
    second.locator("#status").get_by_text("Waiting a few seconds").wait_for(timeout=20_000)
    assert not second.locator("#vote-a").is_visible()
    # The battle ends in the first tab, and the waiting page gets it, with the notice replaced.
    second.locator("#vote-a").wait_for(state="visible", timeout=60_000)
    status = second.locator("#status").inner_text()
    assert "Welcome back" in status and "Waiting" not in status
    assert "A story, please" in panes(second)


def test_a_tab_closed_mid_answer_is_given_back_or_told_lost(  # type: ignore[no-untyped-def]
    arena_server, slow_demo_url: str, browser
) -> None:
    url, _ = arena_server(demo_config_data(slow_demo_url, TWO))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    send_prompt(page, url, "A story, please")
    page.get_by_text("Both models are answering").wait_for(timeout=20_000)
    page.close()  # mid-answer
    again = context.new_page()  # the same voter (cookie) comes back
    again.goto(url + "/")
    resumed = again.locator("#vote-a")
    lost = again.get_by_text("could not be kept")
    resumed.or_(lost).first.wait_for(state="visible", timeout=60_000)
    if resumed.is_visible():
        assert "A story, please" in panes(again)
        again.locator("#vote-a").click()
        again.locator("#reveal").wait_for(state="visible", timeout=20_000)
    else:
        assert again.locator("#prompt textarea").is_enabled()


def test_a_follow_up_typed_straight_away_goes_into_the_box(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, sqlite_url: str, browser
) -> None:
    # The box is disabled while the models answer, which drops the focus; typing at once after
    # the answers must land in the box, never on the vote keys (review of issue 9).
    url, _ = arena_server(demo_config_data(demo_url, TWO))
    page = new_page(browser)
    battle_to_vote(page, url)
    # The vote row and the box made usable come in one update but may be drawn a frame apart;
    # a keyboard typed in between (here a machine, under load) types into a disabled box.
    page.wait_for_function("!document.querySelector('#prompt textarea').disabled")
    page.keyboard.type("1 more example, please")
    assert page.locator("#prompt textarea").input_value() == "1 more example, please"
    assert not page.locator("#reveal").is_visible() and outcomes(sqlite_url) == []
    # After a reload, too: the page's first focus is the box.
    page.locator("#prompt textarea").fill("")
    page.reload()
    page.locator("#vote-a").wait_for(state="visible", timeout=20_000)
    page.keyboard.type("2 reasons why")
    assert page.locator("#prompt textarea").input_value() == "2 reasons why"
    assert outcomes(sqlite_url) == []
    # Letters never vote; a digit does once the cursor has left the box.
    page.keyboard.press("Escape")  # leaves the box
    page.keyboard.press("b")
    page.wait_for_timeout(300)
    assert outcomes(sqlite_url) == []
    page.keyboard.press("2")
    page.locator("#reveal").get_by_text("Your vote: B is better").wait_for(timeout=20_000)
    assert [o for _, o in outcomes(sqlite_url)] == ["b"]


def test_two_vote_keys_in_quick_succession_record_the_first(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, sqlite_url: str, browser
) -> None:
    # Both presses used to reach the server as two events, and whichever finished first was
    # stored; the page then said the battle had a vote "from another tab".
    url, _ = arena_server(demo_config_data(demo_url, TWO))
    page = new_page(browser)
    battle_to_vote(page, url)
    page.keyboard.press("Escape")  # out of the prompt box
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.locator("#reveal").get_by_text("Your vote: A is better").wait_for(timeout=20_000)
    page.wait_for_timeout(500)  # time for a second event to be refused, had it been sent
    assert [o for _, o in outcomes(sqlite_url)] == ["a"]
    assert page.get_by_text("from another tab").count() == 0


def test_a_stale_tab_shows_the_battle_as_it_stands(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, sqlite_url: str, browser
) -> None:
    url, _ = arena_server(demo_config_data(demo_url, TWO))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    first = context.new_page()
    battle_to_vote(first, url, "Two tabs, one battle")
    second = context.new_page()  # the same voter: the battle comes back here too
    second.goto(url + "/")
    second.locator("#vote-a").wait_for(state="visible", timeout=20_000)
    second.locator("#vote-a").click()
    second.locator("#reveal").wait_for(state="visible", timeout=20_000)
    first.locator("#vote-b").click()  # the first tab still shows the vote buttons
    first.locator("#reveal").get_by_text("Your vote: A is better").wait_for(timeout=20_000)
    assert "already had your vote" in first.locator("#status").inner_text()
    assert not first.locator("#vote-b").is_visible() and error_badges(first) == 0
    assert [o for _, o in outcomes(sqlite_url)] == ["a"]


def test_the_counter_follows_a_registry_reload(  # type: ignore[no-untyped-def]
    tmp_path, demo_url: str, sqlite_url: str, browser
) -> None:
    from arena.app import create_app
    from arena.config import Secret, Settings
    from tests.servers import serve, write_config

    path = write_config(tmp_path, demo_config_data(demo_url, TWO, max_prompt_chars=50))
    settings = Settings(config_path=path, database_url=sqlite_url, admin_token=Secret("t" * 32))
    app = create_app(settings)
    with serve(app.asgi, "/api/health") as url:
        page = new_page(browser)
        page.goto(url + "/")
        box = page.locator("#prompt textarea")
        box.fill("x" * 60)
        assert page.locator("#prompt-meter").inner_text() == "60 / 50"
        write_config(tmp_path, demo_config_data(demo_url, TWO, max_prompt_chars=80))
        headers = {"authorization": "Bearer " + "t" * 32}
        assert httpx.post(url + "/api/v1/admin/reload", headers=headers).status_code == 200
        page.reload()  # the page's own check now allows what the server allows
        page.locator("#prompt-meter[data-max='80']").wait_for(state="attached", timeout=20_000)
        box.fill("x" * 60)
        assert page.locator("#prompt-meter").inner_text() == "60 / 80"
        box.press("Enter")
        page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
