"""Play one battle in headless Chromium and save screenshots to docs/img/.

Usage: start the arena (`make run`), then
    .venv/bin/pip install playwright   # the Python driver only; no browser download
    .venv/bin/python docs/screenshot.py [URL]                 # the battle screenshots
    .venv/bin/python docs/screenshot.py --leaderboard [URL]   # after votes and a ratings run
    .venv/bin/python docs/screenshot.py --slips [URL]         # a careless voter's slips (issue 9)
Needs Chromium at /usr/bin/chromium (Debian package `chromium`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
URL = ARGS[0] if ARGS else "http://127.0.0.1:7860/"
OUT = Path(__file__).resolve().parent / "img"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def leaderboard() -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(URL)
        page.get_by_role("tab", name="Leaderboard").click()
        page.locator("#plot-ratings .js-plotly-plot").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # plotly draws after the element appears
        page.screenshot(path=str(OUT / "leaderboard.png"), full_page=True)
        browser.close()
    print(f"saved {OUT / 'leaderboard.png'}")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(URL)
        # Replay until a reasoning model is drawn, to show the thinking indicator.
        for played in range(1, 13):
            page.locator("#prompt textarea").fill("How should I learn to write clean Python code?")
            page.locator("#send").click()
            try:
                page.get_by_text("Thinking…").first.wait_for(timeout=2500)
                page.screenshot(path=str(OUT / "battle-thinking.png"), full_page=True)
                print(f"a reasoning model was drawn in battle {played}")
                break
            except PlaywrightTimeout:
                page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
                page.locator("#new-battle").click()
                page.wait_for_timeout(500)
        else:
            raise SystemExit("no reasoning model was drawn; is demo-reasoner configured?")
        page.locator("#vote-a").wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(OUT / "battle-vote.png"), full_page=True)
        page.locator("#vote-a").click()
        page.locator("#reveal").get_by_text("Your vote").wait_for(timeout=30_000)
        page.get_by_text("Reasoning ·").first.click()  # open the revealed reasoning
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "battle-reveal.png"), full_page=True)
        browser.close()
    print(f"saved screenshots to {OUT}")


def _to_vote(page: object, prompt: str) -> None:
    page.locator("#prompt textarea").fill(prompt)  # type: ignore[attr-defined]
    page.locator("#prompt textarea").press("Enter")  # type: ignore[attr-defined]
    page.locator("#vote-a").wait_for(state="visible", timeout=60_000)  # type: ignore[attr-defined]


def slips() -> None:
    """The states a careless voter meets, each on a page that still works (issue 9)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.goto(URL)
        _to_vote(page, "Why is the sky blue?")
        page.locator("#prompt textarea").fill("")
        page.locator("#prompt textarea").press("Enter")  # Enter on nothing, mid-battle
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "slip-empty-enter.png"), full_page=True)
        page.locator("#prompt textarea").fill("Please review this. " * 420)  # over 8,000
        page.locator("#send").click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "slip-too-long.png"), full_page=True)
        page.locator("#prompt textarea").fill("")
        page.reload()  # the battle comes back
        page.locator("#vote-a").wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "slip-reload.png"), full_page=True)
        page.keyboard.press("Escape")  # out of the prompt box
        page.keyboard.press("2")  # a vote from the keyboard
        page.locator("#reveal").wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "slip-reveal.png"), full_page=True)
        page.locator("#new-battle").click()
        page.locator("#prompt textarea").fill("Tell me a long story about the sea")
        page.locator("#prompt textarea").press("Enter")
        page.get_by_text("Both models are answering").wait_for(timeout=30_000)
        page.close()  # a tab closed mid-answer
        page = context.new_page()
        page.goto(URL)
        page.get_by_text("could not be kept").wait_for(timeout=60_000)
        page.screenshot(path=str(OUT / "slip-lost.png"), full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(URL)
        _to_vote(phone, "Give me three tips for sleeping well")
        phone.screenshot(path=str(OUT / "slip-phone.png"), full_page=True)
        browser.close()
    print(f"saved the slips' screenshots to {OUT}")


if __name__ == "__main__":
    if "--leaderboard" in sys.argv:
        leaderboard()
    elif "--slips" in sys.argv:
        slips()
    else:
        main()
