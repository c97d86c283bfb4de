"""The arena tab: a battle, the vote and the reveal.

Everything the browser receives before a vote comes from `BattleView`, which
carries no model name and no reasoning text. The battle id lives in `gr.State`,
which stays on the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from arena.battles import BattleView, Reveal, RevealedSide, TurnView
from arena.errors import ArenaError
from arena.identity import Identity, Voter
from arena.lifecycle import BattleState, Outcome
from arena.render import inline, plain, render

if TYPE_CHECKING:
    from arena.app import App

# The only LaTeX the page renders: `$$ … $$`, the spans arena.render leaves as text.
LATEX: list[dict[str, str | bool]] = [{"left": "$$", "right": "$$", "display": True}]

OUTCOME_TEXT = {
    Outcome.A: "A is better",
    Outcome.B: "B is better",
    Outcome.TIE: "Tie",
    Outcome.BOTH_BAD: "Both are bad",
}


@dataclass(frozen=True)
class Session:
    """Per-browser state, kept server-side by gr.State."""

    battle_id: str | None = None
    view: BattleView | None = None
    reveal: Reveal | None = None


def voter_of(identity: Identity, request: gr.Request | None) -> Voter:
    """The voter behind a Gradio event, decided by arena.identity like every other request."""
    if request is None:
        return identity.voter({}, None, {})
    client = getattr(request, "client", None)
    return identity.voter(
        getattr(request, "cookies", None) or {},
        getattr(client, "host", None) if client else None,
        getattr(request, "headers", None) or {},
        getattr(request, "session_hash", None),
    )


def _turn_messages(
    turn: TurnView, reasoning: str | None, revealed: bool, remote_images: bool = False
) -> list[dict[str, Any]]:
    """One turn as chat messages. Text from people and models goes through arena.render:
    safe HTML that the page shows as is (docs/security.md)."""
    out: list[dict[str, Any]] = [
        {"role": "user", "content": render(turn.prompt, remote_images=remote_images)}
    ]
    if turn.thinking_seconds is not None:
        seconds = turn.thinking_seconds
        if revealed:
            out.append(
                {
                    "role": "assistant",
                    "content": render(reasoning, remote_images=remote_images)
                    if reasoning
                    else "(no reasoning text)",
                    "metadata": {"title": f"Reasoning · {seconds:.1f} s", "status": "done"},
                }
            )
        elif turn.thinking:
            out.append(
                {
                    "role": "assistant",
                    "content": "The reasoning is shown after you vote.",
                    "metadata": {"title": f"Thinking… {seconds:.0f} s", "status": "pending"},
                }
            )
        else:
            out.append(
                {
                    "role": "assistant",
                    "content": "The reasoning is shown after you vote.",
                    "metadata": {"title": f"Thought for {seconds:.1f} s", "status": "done"},
                }
            )
    if turn.error:
        out.append({"role": "assistant", "content": plain(f"⚠️ {turn.error}")})
    elif turn.content:
        content = render(turn.content, remote_images=remote_images, streaming=not turn.done)
        out.append({"role": "assistant", "content": content})
    elif not turn.done and not turn.thinking:
        out.append({"role": "assistant", "content": "…"})
    return out


def chat_messages(
    turns: tuple[TurnView, ...],
    revealed: RevealedSide | None = None,
    *,
    remote_images: bool = False,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        reasoning = None
        if revealed is not None and i < len(revealed.reasoning):
            reasoning = revealed.reasoning[i]
        out.extend(_turn_messages(turn, reasoning, revealed is not None, remote_images))
    return out


def _status(view: BattleView) -> str:
    if view.state is BattleState.ANSWERING:
        return "Both models are answering…"
    if view.state is BattleState.AWAITING_VOTE:
        more = (
            f" or ask a follow-up ({view.turns_left} left)"
            if view.turns_left > 0
            else " (no follow-ups left)"
        )
        return f"**Which answer is better?** Vote below{more}."
    if view.state is BattleState.FAILED:
        return (
            "A side failed to answer, so this battle cannot be voted on. "
            "Press **New battle** to try again."
        )
    return ""


def _plain(text: str) -> str:
    """Registry text shown as written, inside the reveal's HTML: no markup of its own."""
    return inline(text)


def _side_card(label: str, side: RevealedSide, remote_images: bool = False) -> str:
    parts = [f"<strong>{label}: {_plain(side.model)}</strong>"]
    details = " · ".join(_plain(x) for x in (side.organization, side.license) if x)
    if details:
        parts.append(details)
    if side.unreleased:
        parts.append("unreleased (codename)")
    card = f"<p>{' — '.join(parts)}</p>"
    if side.description:  # markdown, rendered and cleaned like an answer
        card += render(side.description, remote_images=remote_images)
    return card


def reveal_markdown(reveal: Reveal, remote_images: bool = False) -> str:
    """The reveal card: safe HTML on one line, which gr.Markdown passes through."""
    return (
        f'<div class="arena-md"><h3>Your vote: {OUTCOME_TEXT[reveal.outcome]}</h3>'
        f"{_side_card('Model A', reveal.a, remote_images)}"
        f"{_side_card('Model B', reveal.b, remote_images)}</div>"
    )


def arena_tab(app: App) -> None:
    """The battle page's components and events, inside the caller's Blocks."""
    battles = app.battles
    config = app.config
    images = config.security.remote_images  # may answers load images (arena.render)?
    if config.demo:
        gr.Markdown(
            "🧪 **Demo mode:** the contestants are canned demo models served by "
            "`arena demo-models`, not real language models.",
            elem_classes=["arena-demo-banner"],
        )

    def closed(left: Session) -> None:
        # Gradio drops a closed tab's state after a grace period; an unvoted battle
        # left behind is marked abandoned so it is not counted as pending forever.
        if left.battle_id and left.reveal is None:
            battles.abandon_now(left.battle_id)

    session = gr.State(Session(), delete_callback=closed)
    with gr.Row(equal_height=True):
        chat_a, chat_b = (
            gr.Chatbot(
                label=f"Model {side}",
                height=480,
                feedback_options=None,
                # Messages are HTML from arena.render, so the copy button would copy markup;
                # code blocks keep their own copy button.
                buttons=[],
                elem_id=f"chat-{side.lower()}",
                # arena.render sends each message as one line of cleaned HTML, which this
                # markdown step passes through whole (and which keeps Gradio's text styles).
                render_markdown=True,
                sanitize_html=True,  # a second, browser-side sanitiser behind nh3
                allow_tags=False,
                latex_delimiters=LATEX,
            )
            for side in "AB"
        )
    status = gr.Markdown("", elem_id="status")
    with gr.Row(visible=False, elem_id="vote-row") as vote_row:
        vote_buttons = {
            Outcome.A: gr.Button("👈 A is better", elem_id="vote-a"),
            Outcome.B: gr.Button("👉 B is better", elem_id="vote-b"),
            Outcome.TIE: gr.Button("🤝 Tie", elem_id="vote-tie"),
            Outcome.BOTH_BAD: gr.Button("👎 Both are bad", elem_id="vote-both-bad"),
        }
    reveal = gr.Markdown(
        "", visible=False, elem_id="reveal", sanitize_html=True, latex_delimiters=LATEX
    )
    with gr.Row():
        prompt = gr.Textbox(
            placeholder="Type your prompt and press Enter",
            show_label=False,
            scale=8,
            max_lines=8,
            elem_id="prompt",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    new = gr.Button("🔄 New battle", elem_id="new-battle")

    outputs = [chat_a, chat_b, prompt, send, vote_row, status, reveal, session]

    def render(view: BattleView, changed: bool = True) -> tuple[Any, ...]:
        """`changed=False`: only the chats moved; everything else is skipped, because
        Gradio rebuilds a component's config for every update it is sent."""
        if not changed:
            skip = gr.skip()
            return (
                chat_messages(view.a, remote_images=images),
                chat_messages(view.b, remote_images=images),
                *[skip] * 6,
            )
        can_type = view.state is BattleState.AWAITING_VOTE and view.turns_left > 0
        return (
            chat_messages(view.a, remote_images=images),
            chat_messages(view.b, remote_images=images),
            gr.update(value="", interactive=can_type),
            gr.update(interactive=can_type),
            gr.update(visible=view.state is BattleState.AWAITING_VOTE),
            _status(view),
            gr.update(value="", visible=False),
            Session(battle_id=view.battle_id, view=view),
        )

    async def ask(
        text: str, current: Session, request: gr.Request
    ) -> AsyncIterator[tuple[Any, ...]]:
        voter = voter_of(app.identity, request)
        try:
            view = current.view
            if current.battle_id and view and view.state is BattleState.AWAITING_VOTE:
                stream = battles.follow_up(current.battle_id, voter, text)
            else:
                stream = battles.start(voter, text)
            last_state = None
            async for view in stream:
                yield render(view, changed=view.state is not last_state)
                last_state = view.state
        except ArenaError as err:
            raise gr.Error(str(err)) from None

    def voter_for(outcome: Outcome) -> Any:
        async def vote(current: Session, request: gr.Request) -> tuple[Any, ...]:
            if not current.battle_id or current.view is None:
                raise gr.Error("There is no battle to vote on yet.")
            try:
                result = await battles.vote(
                    current.battle_id, voter_of(app.identity, request), outcome
                )
            except ArenaError as err:
                raise gr.Error(str(err)) from None
            view = current.view
            return (
                chat_messages(view.a, result.a, remote_images=images),
                chat_messages(view.b, result.b, remote_images=images),
                gr.update(value="", interactive=False),
                gr.update(interactive=False),
                gr.update(visible=False),
                "Thanks for voting! Press **New battle** to play again.",
                gr.update(value=reveal_markdown(result, images), visible=True),
                Session(battle_id=current.battle_id, view=view, reveal=result),
            )

        vote.__name__ = f"vote_{outcome.value}"
        return vote

    async def new_battle(current: Session) -> tuple[Any, ...]:
        if current.battle_id and current.reveal is None:
            await battles.abandon(current.battle_id)
        return (
            [],
            [],
            gr.update(value="", interactive=True),
            gr.update(interactive=True),
            gr.update(visible=False),
            "",
            gr.update(value="", visible=False),
            Session(),
        )

    # No concurrency limit: one voter's battle never waits for another's.
    # One event for Send and Enter, so a session streams one battle at a time.
    asking = gr.on(
        [send.click, prompt.submit],
        ask,
        [prompt, session],
        outputs,
        api_name="ask",
        concurrency_limit=None,
    )
    for outcome, button in vote_buttons.items():
        button.click(
            voter_for(outcome),
            [session],
            outputs,
            api_name=f"vote_{outcome.value}",
            concurrency_limit=None,
        )
    # Cancelling a streaming battle runs its abandon path; without it the old battle
    # would keep streaming into the panes of the new one.
    new.click(
        new_battle,
        [session],
        outputs,
        api_name="new_battle",
        concurrency_limit=None,
        cancels=[asking],
    )
