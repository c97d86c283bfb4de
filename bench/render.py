"""Benchmark: what rendering answers costs, on the server and in the browser.

    python -m bench.render               # server side only (a few seconds)
    python -m bench.render --browser     # and headless Chromium, before and after (minutes)

Server side: `arena.render.render` on typical, long and hostile answers, once; a streamed
answer rendered at every update, as the battle page does, against rendering the whole text at
every update (what a renderer without the block cache would cost); and what closing a growing
block's unfinished markup (`**Point` shown bold while streaming) adds to each update.

Browser (needs Debian's `chromium`): a real arena and demo model server in this process, one
battle per case in headless Chromium. Measured from pressing Enter to the vote buttons being
visible, and from clicking a vote to the reveal. "before" hands the raw answer text to Gradio's
own markdown step, as the page did before arena.render (the `render` of arena.ui.battle is
replaced by the identity for that run); "after" is the page as it is. A "before" run that has
not shown the vote buttons after --cap seconds is reported as "> cap". Times are reported,
never asserted.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from arena import demo_models, render
from arena.config import NO_LIMITS, registry_toml
from arena.demo_models import Answer

PARAGRAPH = (
    "Some **bold** words, some *italic* ones, `inline code` and a [link](https://example.com). " * 3
)
SECTION = (
    f"## Heading {{i}}\n\n{{i}}: {PARAGRAPH}\n\n- point {{i}}\n- another point\n  - nested\n\n"
    "| a | b |\n|---|--:|\n| {i} | 2 |\n\n```python\ndef f(x):\n    return x * {i}\n```\n\n"
)


def markdown_document(chars: int) -> str:
    """Distinct sections (the block cache would make repeated ones free)."""
    out, size, i = [], 0, 0
    while size < chars:
        out.append(SECTION.format(i=i))
        size += len(out[-1])
        i += 1
    return "".join(out)[:chars]


def repeated(unit: str, chars: int) -> str:
    return unit * (chars // len(unit))


def hostile_answer() -> str:
    return demo_models.hostile([{"role": "user", "content": "x"}], random.Random(0)).content


# -- server side --------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best of `repeat` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def fresh() -> None:
    render._markdown_block.cache_clear()


def server_side() -> None:
    print("## Server side: one render of a whole answer (cache cleared before each run)\n")
    print("| answer | characters | render |")
    print("| --- | ---: | ---: |")
    cases = [
        ("verbose demo answer", demo_models.verbose([{"role": "user", "content": "x"}],
                                                    random.Random(0)).content),
        ("markdown document", markdown_document(4_000)),
        ("markdown document", markdown_document(20_000)),
        ("markdown document", markdown_document(200_000)),
        ("hostile demo answer", hostile_answer()),
        ("hostile-long: 'a*' unbroken", repeated("a*", 200_000)),
        ("'![' repeated, 8,000 (one block at BLOCK_LIMIT)", repeated("![", 8_000)),
        ("'![' in 400-char paragraphs", ("![" * 200 + "\n\n") * 50),
        ("'a*' in 400-char paragraphs", ("a*" * 200 + "\n\n") * 50),
    ]  # fmt: skip
    for name, text in cases:

        def once(text: str = text) -> None:
            fresh()
            render.render(text)

        print(f"| {name} | {len(text):,} | {timed(once, 3):.1f} ms |")

    print("\n## Server side: a streamed answer, rendered at every update\n")
    print("Updates every 40 characters (10 a second at 100 tokens/s of 4 characters).\n")
    print("| answer | characters | updates | with the block cache | whole text every update |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, text in [
        ("markdown document", markdown_document(4_000)),
        ("markdown document", markdown_document(20_000)),
        ("'a*' in 400-char paragraphs", ("a*" * 200 + "\n\n") * 25),
    ]:
        ends = [*range(40, len(text), 40), len(text)]

        def stream(text: str = text, ends: list[int] = ends) -> None:
            fresh()
            for end in ends:
                render.render(text[:end], streaming=end < len(text))

        def naive(text: str = text, ends: list[int] = ends) -> None:
            for end in ends:
                render._render_block(text[: min(end, render.MARKDOWN_LIMIT)], False)

        print(
            f"| {name} | {len(text):,} | {len(ends)} | {timed(stream):,.0f} ms "
            f"| {timed(naive):,.0f} ms |"
        )

    print("\n## Server side: the growing block's unfinished markup, closed before each update\n")
    print(f"One block of {render.STREAM_TAIL_LIMIT:,} characters (the most that is rendered while")
    print("streaming), best of 20; its render, for scale.\n")
    print("| growing block | closing its markup | rendering it |")
    print("| --- | ---: | ---: |")
    for name, unit in [
        ("prose with bold, italics, code and links", PARAGRAPH),
        ("`**a ` repeated, every run open", "**a "),
        ("`[` repeated, every bracket open", "["),
        ("`_a a* ` repeated (openers of one mark, closers of another)", "_a a* "),
        ("`a*` repeated", "a*"),
    ]:
        block = repeated(unit, render.STREAM_TAIL_LIMIT + len(unit))[: render.STREAM_TAIL_LIMIT]

        def close(block: str = block) -> None:
            render._finish_inline(block)

        def draw(block: str = block) -> None:
            render._render_block(block, False)

        print(f"| {name} | {timed(close, 20):.2f} ms | {timed(draw, 5):.1f} ms |")


# -- browser ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, health: str) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx.get(url + health, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def arena(demo_url: str, model: str, tmp: Path) -> Iterator[str]:
    from arena import db
    from arena.app import create_app
    from arena.config import Settings

    database = tmp / f"{model}.db"
    db.upgrade(f"sqlite:///{database}")
    registry = {
        "arena": {"title": "Bench", "demo": True},
        "ratings": {"interval_minutes": 0},
        "limits": NO_LIMITS,
        "timeouts": {"first_token": 60, "between_tokens": 60, "total": 600},
        "models": [
            {"name": name, "endpoints": [{"base_url": demo_url + "/v1", "model": model_id}]}
            for name, model_id in (("bench-case", model), ("bench-other", "terse"))
        ],
    }
    path = tmp / f"{model}.toml"
    path.write_text(registry_toml(registry), encoding="utf-8")
    settings = Settings(config_path=path, database_url=f"sqlite:///{database}", port=free_port())
    with serve(create_app(settings).asgi, "/api/health") as url:
        yield url


def one_battle(url: str, chromium: str, cap: float) -> tuple[float | None, float | None]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(url + "/")
            page.locator("#prompt textarea").fill("Go")
            start = time.monotonic()
            page.locator("#prompt textarea").press("Enter")
            try:
                page.locator("#vote-tie").wait_for(state="visible", timeout=cap * 1000)
            except PlaywrightTimeout:
                return None, None
            ready = time.monotonic() - start
            start = time.monotonic()
            page.locator("#vote-tie").click(timeout=cap * 1000)
            page.locator("#reveal").get_by_text("Your vote").wait_for(timeout=cap * 1000)
            return ready, time.monotonic() - start
        finally:
            browser.close()


def canned(text: str) -> Callable[[list[dict[str, Any]], random.Random], Answer]:
    def model(messages: list[dict[str, Any]], rng: random.Random) -> Answer:
        return Answer(text)

    return model


def browser_side(cap: float) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("--browser needs Chromium (Debian package `chromium`)")
    import arena.ui.battle as battle

    cases: list[tuple[str, str, float]] = [
        ("verbose demo answer", "verbose", 0),
        ("markdown document, 4,000 chars", "doc4k", 0),
        ("markdown document, 200,000 chars", "doc200k", 0),
        ("hostile demo answer", "hostile", 0),
        ("unbroken 'x' × 200,000", "x200k", 0),
        ("unbroken 'a_' × 100,000 (200,000 chars)", "a_200k", 0),
        ("unbroken 'a*' × 50,000 (100,000 chars)", "astar100k", 0),
        ("hostile-long: unbroken 'a*' × 100,000 (200,000 chars)", "hostile-long", 0),
        ("markdown document, 30,000 chars, streamed at 400 tokens/s", "doc30k", 400),
    ]
    answers = {
        "doc4k": markdown_document(4_000),
        "doc200k": markdown_document(200_000),
        "doc30k": markdown_document(30_000),
        "x200k": repeated("x", 200_000),
        "a_200k": repeated("a_", 200_000),
        "astar100k": repeated("a*", 100_000),
    }
    for key, text in answers.items():
        demo_models.MODELS[key] = canned(text)
    print("\n## Browser: Enter to vote buttons, vote to reveal (headless Chromium)\n")
    print(f"A 'before' run still waiting after {cap:.0f} s is cut off.\n")
    print("| answer | before: buttons | before: reveal | after: buttons | after: reveal |")
    print("| --- | ---: | ---: | ---: | ---: |")
    real_render = battle.render

    def raw(text: str, **_: Any) -> str:
        return text

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        fast = demo_models.create_demo_app(latency=0.0, tokens_per_second=0)
        slow = demo_models.create_demo_app(latency=0.0, tokens_per_second=400)
        with serve(fast, "/health") as instant, serve(slow, "/health") as streamed:
            for name, model, tps in cases:
                row = [name]
                for before in (True, False):
                    battle.render = raw if before else real_render  # type: ignore[assignment]
                    with arena(streamed if tps else instant, model, tmp) as url:
                        ready, reveal = one_battle(url, chromium, cap)
                    if ready is None:
                        row += [f"> {cap:.0f} s", "—"]
                    else:
                        row += [f"{ready:.2f} s", f"{reveal:.2f} s"]
                    print(f"  … {name} ({'before' if before else 'after'})", file=sys.stderr)
                battle.render = real_render
                print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--browser", action="store_true", help="also measure in Chromium")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds per browser wait")
    args = parser.parse_args()
    server_side()
    if args.browser:
        browser_side(args.cap)


if __name__ == "__main__":
    main()
