"""The Gradio page: the arena tab and the leaderboard tab. The only package that imports gradio."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from arena.ui.battle import arena_tab
from arena.ui.leaderboard import leaderboard_tab

if TYPE_CHECKING:
    from arena.app import App

STATIC = Path(__file__).resolve().parent.parent / "static"


def build(app: App) -> gr.Blocks:
    config = app.config
    with gr.Blocks(title=config.title, fill_width=False) as blocks:
        gr.Markdown(
            f"# ⚔️ {config.title}\n"
            "Ask anything. Two anonymous models answer side by side. "
            "Vote for the better answer, and only then see who they were."
        )
        with gr.Tabs():
            with gr.Tab("⚔️ Arena", id="arena"):
                arena_tab(app, blocks)
            with gr.Tab("🏆 Leaderboard", id="leaderboard") as tab:
                refresh = leaderboard_tab(app)
        # Read the newest snapshot whenever the tab is opened; not at page load, which would
        # cost every voter a table and four plots they may never look at.
        tab.select(
            refresh.fn,
            refresh.inputs,
            refresh.outputs,
            api_visibility="private",
            show_progress="hidden",
        )
    # Gradio's queue runs at most `max_threads` events at once (40 by default, and only
    # launch() sets it); past that a voter waits for strangers' battles to finish.
    blocks.max_threads = config.max_concurrent_events
    blocks.queue(default_concurrency_limit=None)
    return blocks


def mount(app: App) -> None:
    blocks = build(app)
    css = STATIC / "arena.css"
    script = (STATIC / "arena.js").read_text(encoding="utf-8")
    gr.mount_gradio_app(
        app.asgi,
        blocks,
        path="/",
        css_paths=[css] if css.exists() else None,
        head=f"<script>{script}</script>",  # counter, prompt checks, vote keys (issue 9)
        footer_links=["api"],
        show_error=False,  # gr.Error messages still show; other exceptions stay server-side
        run_history=False,  # battles are not kept in the browser's storage
    )
