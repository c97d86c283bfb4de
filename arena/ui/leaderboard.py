"""The leaderboard tab: the latest snapshot as a table and four plots.

Everything shown comes from a snapshot the ratings job wrote (arena/leaderboard.py decides what
the public may see); nothing is fitted here.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import plotly.graph_objects as go

from arena.leaderboard import OVERALL, Snapshot, model_cards, public_matrices, public_rows
from arena.leaderboard import rated_models as load_rated_models

if TYPE_CHECKING:
    from arena.app import App

COLUMNS = [
    "Rank (UB)",
    "Rank spread",
    "Model",
    "Rating",
    "95% CI (±)",
    "Votes",
    "Organization",
    "License",
    "Median tokens",
]
# The heatmaps stay readable up to this many models (the best ones by rating).
HEATMAP_MODELS = 30


def intro(min_votes: int) -> str:
    return (
        "**How to read this.** Ratings come from blind votes: two anonymous models answer the "
        "same prompt and a person picks the better one. They are Bradley–Terry ratings on an "
        "Elo-like scale: a model 100 points above another wins about 64% of their battles. "
        "The ± column is a 95% confidence interval. *Rank (UB)* is 1 plus the number of models "
        "whose interval lies wholly above this one, so models that cannot be told apart share a "
        "rank; *Rank spread* runs from that rank to the lowest rank the intervals allow. "
        f"Models with fewer than {min_votes} votes are marked *preliminary*. *Style control* "
        "rates the models as if their answers had the same length and markdown; the ratings "
        "also correct for voters' slight preference for one side of the page."
    )


def category_label(category: str) -> str:
    if category.startswith("language:"):
        return f"Language: {category.split(':', 1)[1]}"
    return category.replace("_", " ").capitalize()


def _fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table_rows(rows: list[dict[str, Any]], search: str = "") -> list[list[Any]]:
    needle = search.strip().casefold()
    out = []
    for r in rows:
        if (
            needle
            and needle not in r["model"].casefold()
            and needle not in (r["organization"] or "").casefold()
        ):
            continue
        spread = (
            str(r["rank_ub"]) if r["rank_ub"] == r["rank_lb"] else f"{r['rank_ub']}–{r['rank_lb']}"
        )
        ci = "—"
        if r["upper"] is not None and r["lower"] is not None:
            ci = f"+{r['upper'] - r['rating']:.0f} / −{r['rating'] - r['lower']:.0f}"
        name = r["model"]
        if r["preliminary"]:
            name += " (preliminary)"
        if r.get("deprecated"):
            name += " (deprecated)"
        out.append(
            [
                r["rank_ub"],
                spread,
                name,
                round(r["rating"]),
                ci,
                r["votes"],
                r["organization"],
                r["license"],
                _fmt(r["median_tokens"]),
            ]
        )
    return out


def label(name: str) -> str:
    """A model name as plotly text: plotly renders tags such as <a> and <span> in labels, and
    imported names are anyone's input."""
    return html.escape(name)


def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    fig.update_layout(
        title=title, template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 60}, **kw
    )
    return fig


def _whiskers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rating's 95% interval as asymmetric error bars."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [r["upper"] - r["rating"] for r in rows],
        "arrayminus": [r["rating"] - r["lower"] for r in rows],
    }


def ratings_figure(rows: list[dict[str, Any]]) -> go.Figure:
    shown = [r for r in rows if r["lower"] is not None]
    fig = go.Figure(
        go.Scatter(
            x=[label(r["model"]) for r in shown],
            y=[r["rating"] for r in shown],
            mode="markers",
            error_y=_whiskers(shown),
        )
    )
    return _layout(fig, "Ratings with 95% intervals", yaxis_title="Rating", height=420)


def heatmap_figure(matrix: list[list[Any]], models: list[str], title: str, fmt: str) -> go.Figure:
    z = [[math.nan if v is None else v for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[label(m) for m in models],
            y=[label(m) for m in models],
            colorscale="RdBu" if "win" in title.lower() else "Blues",
            texttemplate=fmt,
            hovertemplate="%{y} vs %{x}: %{z}<extra></extra>",
        )
    )
    return _layout(
        fig,
        title,
        xaxis_title="Model B",
        yaxis_title="Model A",
        yaxis_autorange="reversed",
        height=520,
    )


def compute_figure(
    rows: list[dict[str, Any]],
    x_field: str = "mean_tokens",
    x_title: str = "Mean tokens per answer, every sample and reward call (log scale)",
) -> go.Figure:
    """Rating against the compute each answer cost (issue 7). The variants of one family (the
    same weights with more thinking, more samples, a reward model) are one line, cheapest
    first, so the chart shows what extra compute buys."""
    shown = [r for r in rows if r.get(x_field) and r["lower"] is not None]
    families: dict[str, list[dict[str, Any]]] = {}
    for r in shown:
        families.setdefault(r.get("family") or r["model"], []).append(r)
    fig = go.Figure()
    for family, members in families.items():
        members.sort(key=lambda r: r[x_field])
        fig.add_trace(
            go.Scatter(
                x=[r[x_field] for r in members],
                y=[r["rating"] for r in members],
                text=[label(r["model"]) for r in members],
                name=label(family),
                mode="lines+markers+text" if len(members) > 1 else "markers+text",
                textposition="top center",
                error_y=_whiskers(members),
                showlegend=len(members) > 1,
            )
        )
    if not shown:
        fig.add_annotation(
            text="No token counts in this board (imported votes without answers).",
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
        )
    return _layout(
        fig,
        "Rating against compute per answer",
        xaxis_type="log",
        xaxis_title=x_title,
        yaxis_title="Rating",
        height=460,
    )


@dataclass(frozen=True)
class BoardView:
    snapshot: Snapshot | None
    rows: list[dict[str, Any]]
    categories: list[str]


def load_board(app: App, category: str, style_control: bool, show_deprecated: bool) -> BoardView:
    reader = app.snapshots
    categories = reader.categories()
    snap = reader.latest(category or OVERALL, style_control)
    if snap is None:
        return BoardView(None, [], categories)
    cards = model_cards(app.config, load_rated_models(app.engine))
    rows = public_rows(snap, app.config, cards, show_deprecated=show_deprecated)
    return BoardView(snap, rows, categories)


def footer(view: BoardView, interval_minutes: float) -> str:
    snap = view.snapshot
    if snap is None:
        how = (
            f"Votes are rated every {interval_minutes:g} minutes"
            if interval_minutes > 0
            else "The ratings job is off here"
        )
        return f"No leaderboard yet. {how}; an operator can run `arena ratings compute`."
    p = snap.payload
    when = snap.created_at.strftime("%Y-%m-%d %H:%M UTC")
    extra = ""
    if p.get("position") and p["position"].get("elo") is not None:
        extra = f" Left-side advantage fitted: {p['position']['elo']:+.1f} rating points."
    if p.get("groups", 1) > 1:
        extra += (
            f" These models fall into {p['groups']} groups that never met, directly or"
            " through others: ratings across groups are not comparable."
        )
    board = "with style control" if p["style_control"] else "without style control"
    if not p["votes"]:
        return f"No votes in this board yet (snapshot #{snap.id} of {when}, {board})."
    return (
        f"Snapshot #{snap.id} of {when}, {board}: {p['votes']} votes in this board, "
        f"{p['votes_counted']} counted in all (of {p['votes_total']}).{extra}"
    )


def leaderboard_tab(app: App) -> Refresh:
    """The tab's components and events, inside the caller's Blocks."""
    config = app.config
    gr.Markdown(intro(config.leaderboard.min_votes), elem_id="leaderboard-intro")
    with gr.Row():
        category = gr.Dropdown(
            choices=[(category_label(OVERALL), OVERALL)],
            value=OVERALL,
            label="Category",
            scale=2,
            elem_id="lb-category",
        )
        # The two switches share one column, so on a phone they wrap as a pair instead of
        # being squeezed to a few letters each.
        with gr.Column(scale=1, min_width=180):
            style = gr.Checkbox(label="Style control", value=False, elem_id="lb-style")
            deprecated = gr.Checkbox(label="Show deprecated", value=False, elem_id="lb-deprecated")
        search = gr.Textbox(
            label="Search", placeholder="model or organization", scale=2, elem_id="lb-search"
        )
    table = gr.Dataframe(
        headers=COLUMNS,
        value=[],
        interactive=False,
        wrap=True,
        elem_id="leaderboard-table",
    )
    summary = gr.Markdown("", elem_id="leaderboard-footer")
    with gr.Row():
        ratings_plot = gr.Plot(label="Ratings", elem_id="plot-ratings")
        compute_plot = gr.Plot(label="Rating against compute", elem_id="plot-compute")
    with gr.Row():
        winrate_plot = gr.Plot(label="Predicted win rate", elem_id="plot-winrate")
        counts_plot = gr.Plot(label="Battles per pair", elem_id="plot-counts")

    def refresh(
        category_value: str, style_value: bool, deprecated_value: bool, search_value: str
    ) -> tuple[Any, ...]:
        category_value, search_value = _text(category_value, OVERALL), _text(search_value)
        view = load_board(app, category_value, bool(style_value), bool(deprecated_value))
        choices = [(category_label(c), c) for c in view.categories] or [
            (category_label(OVERALL), OVERALL)
        ]
        rows = view.rows
        top = sorted(rows, key=lambda r: -r["rating"])[:HEATMAP_MODELS]
        names = [r["model"] for r in top]
        figures: list[Any] = [None, None, None, None]
        if view.snapshot is not None and rows:
            m = public_matrices(view.snapshot, names)
            figures = [
                ratings_figure(rows),
                compute_figure(rows),
                heatmap_figure(
                    m["predicted"], m["models"], "Predicted win rate (row beats column)", "%{z:.2f}"
                ),
                heatmap_figure(m["battles"], m["models"], "Battles per pair", "%{z}"),
            ]
        return (
            gr.update(choices=choices, value=category_value if view.snapshot else OVERALL),
            table_rows(rows, search_value),
            html.escape(footer(view, config.ratings.interval_minutes)),
            *figures,
        )

    def search_table(
        category_value: str, style_value: bool, deprecated_value: bool, search_value: str
    ) -> list[list[Any]]:
        # Typing in the search box changes the table only: no plots rebuilt per keystroke.
        category_value, search_value = _text(category_value, OVERALL), _text(search_value)
        view = load_board(app, category_value, bool(style_value), bool(deprecated_value))
        return table_rows(view.rows, search_value)

    controls = [category, style, deprecated, search]
    outputs = [category, table, summary, ratings_plot, compute_plot, winrate_plot, counts_plot]
    for control in (category, style, deprecated):
        control.change(refresh, controls, outputs, api_visibility="private", show_progress="hidden")
    search.change(search_table, controls, [table], api_visibility="private", show_progress="hidden")
    return Refresh(refresh, controls, outputs)


def _text(value: Any, default: str = "") -> str:
    """A control's value as sent by a script through the queue may be anything (review of
    issue 8: None raised AttributeError); the page itself always sends text."""
    return value[:200] if isinstance(value, str) else default


@dataclass(frozen=True)
class Refresh:
    """The tab's refresh event, for the page to fire when the tab is opened."""

    fn: Any
    inputs: list[Any]
    outputs: list[Any]
