"""Benchmark: how smoothly an answer reaches the voter's screen (issue 9).

    python -m bench.cadence [--battles 6] [--load 0 20] [--latency 0.3] [--tps 40]

A real page in headless Chromium (Debian's `chromium`) plays battles one after another
against the arena and the demo models, each in a process of its own (bench/battles.py
starts them). In the page, a MutationObserver notes the time of every change of each
pane's visible text. Reported: the gaps between changes while an answer streams (from its
first visible character to its last), and how many gaps exceed 250 ms, the point where
text reads as arriving in bursts. `--load N` runs N other voters (Gradio's queue protocol,
as bench/battles.py plays them) during each of the page's battles, started together.
Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arena import db
from bench.battles import FAST_MODELS, ModelSpec, endpoints, pct, registry, run_voters, serve

BURST_MS = 250.0
WATCH = """() => {
  window.arenaTicks = [];
  const seen = {a: "", b: ""};
  new MutationObserver(() => {
    for (const side of ["a", "b"]) {
      const text = document.getElementById("chat-" + side)?.innerText ?? "";
      if (text !== seen[side]) {
        seen[side] = text;
        window.arenaTicks.push([side, performance.now()]);
      }
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def gaps(ticks: Sequence[Sequence[Any]]) -> list[float]:
    """Milliseconds between successive changes of each pane's text, within one battle."""
    out: list[float] = []
    for side in "ab":
        times = [float(t) for s, t in ticks if s == side]
        out.extend(b - a for a, b in itertools.pairwise(times))
    return out


def page_battles(url: str, battles: int, load: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium (Debian package `chromium`)")
    found: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.evaluate(WATCH)
        eps = endpoints(url)
        for i in range(battles):
            others = threading.Thread(
                target=lambda: asyncio.run(
                    run_voters(url, eps, f"load-{uuid.uuid4().hex[:8]}", load, 0.0, False)
                )
            )
            if load:
                others.start()
            page.locator("#prompt textarea").fill(f"How do tides work? ({i})")
            page.evaluate("window.arenaTicks = []")
            page.locator("#prompt textarea").press("Enter")
            failed = page.get_by_text("cannot be voted on")
            try:
                page.locator("#vote-a").or_(failed).first.wait_for(timeout=120_000)
            except Exception:
                shot = Path(tempfile.gettempdir()) / "cadence-failed.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"the battle did not finish; the page is in {shot}")
                raise
            if failed.is_visible():  # a side failed: say so, and what the panes said
                print(
                    f"battle {i} failed: {page.locator('#chat-a').inner_text()[-120:]!r} | "
                    f"{page.locator('#chat-b').inner_text()[-120:]!r}"
                )
                page.locator("#new-battle").click()
                page.get_by_text("cannot be voted on").wait_for(state="hidden", timeout=60_000)
                if load:
                    others.join()
                continue
            # The first change of each pane is the prompt appearing: the answer starts after.
            ticks = page.evaluate("window.arenaTicks")
            found.extend(gaps([t for t in ticks if t][2:]))
            page.locator("#vote-tie").click()
            page.locator("#reveal").wait_for(state="visible", timeout=60_000)
            page.locator("#new-battle").click()
            page.locator("#reveal").wait_for(state="hidden", timeout=60_000)
            if load:
                others.join()
        browser.close()
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--battles", type=int, default=6)
    parser.add_argument("--load", type=int, nargs="+", default=[0, 20])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--tps", type=float, default=40.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'arena.db'}"
        db.upgrade(database_url)
        demo_params = {"latency": args.latency, "tps": args.tps}
        with serve("demo", "demo", demo_params, "/health") as demo:
            specs = [  # no reasoners: their "Thinking… N s" line changes once a second
                ModelSpec(name, demo_id, tags, demo.url, args.latency)
                for name, (demo_id, tags) in FAST_MODELS.items()
                if demo_id in ("terse", "verbose", "chatty")
            ]
            data = {**registry(specs), "ratings": {"interval_minutes": 0}}
            params = {"registry": data, "database_url": database_url}
            with serve("arena", "arena", params, "/api/health") as app:
                for load in args.load:
                    found = page_battles(app.url, args.battles, load)
                    bursts = sum(g > BURST_MS for g in found)
                    print(
                        f"{load:>4} other voters: {len(found)} gaps between visible changes; "
                        f"p50 {pct(found, 0.5):.0f} ms, p90 {pct(found, 0.9):.0f} ms, "
                        f"max {max(found):.0f} ms; over {BURST_MS:.0f} ms: {bursts}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
