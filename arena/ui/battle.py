"""The arena tab: a battle, the vote and the reveal.

Everything the browser receives before a vote comes from `BattleView`, which
carries no model name and no reasoning text. The battle id lives in `gr.State`,
which stays on the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from arena.battles import WAITING, BattleView, Reveal, RevealedSide, TurnView
from arena.config import ArenaConfig
from arena.errors import ArenaError
from arena.identity import SESSION_VOTER, Identity, Voter
from arena.lifecycle import BattleState, Outcome
from arena.render import MATH_BLOCK, MATH_INLINE, inline, plain, render

if TYPE_CHECKING:
    from arena.app import App

# The only LaTeX the page renders: the spans arena.render leaves as text, displayed where
# they may stand on lines of their own.
LATEX: list[dict[str, str | bool]] = [
    {"left": left, "right": right, "display": left in MATH_BLOCK}
    for left, right in MATH_INLINE.items()
]

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


class PageMarks:
    """When each page last did one thing (pressed New battle; asked), in this process (a
    page's events all reach one process). With New battle: a battle asked for just before it,
    whose first update had not yet told the page its id, is dropped as well (review of issue
    9). With both: a page that was given its last battle back while it had moved on keeps what
    it has (review of issue 10)."""

    LIMIT = 10_000  # pages remembered; the oldest are forgotten first

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def mark(self, page: str | None) -> None:
        if page is None:
            return
        self._at.pop(page, None)
        self._at[page] = time.monotonic()
        while len(self._at) > self.LIMIT:
            del self._at[next(iter(self._at))]

    def since(self, page: str | None, t: float) -> bool:
        return page is not None and self._at.get(page, -1.0) > t


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Fetch a finished task's exception, so one nobody awaited is not logged as lost."""
    if not task.cancelled():
        task.exception()


def _meter(config: ArenaConfig) -> str:
    """Where arena/static/arena.js writes the prompt's length, with the limit it checks."""
    return f'<div id="prompt-meter" data-max="{config.max_prompt_chars}" aria-live="polite"></div>'


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


def _thinking(
    turn: TurnView, reasoning: str | None, revealed: bool, remote_images: bool
) -> dict[str, Any]:
    """A turn's reasoning: after the vote, a collapsed box with its text. Before, one plain
    line: there is nothing to open, and a box opened then would stay open after the vote
    (Gradio keeps a box's state by its place in the pane; a plain line becoming a box starts
    closed). Issue 9."""
    seconds = turn.thinking_seconds or 0.0
    if revealed:
        # Under `reveal = "together"` the page never had the thinking time: just "Reasoning".
        took = f" · {seconds:.1f} s" if turn.thinking_seconds is not None else ""
        return {
            "role": "assistant",
            "content": render(reasoning, remote_images=remote_images)
            if reasoning
            else "(no reasoning text)",
            "metadata": {"title": f"Reasoning{took}", "status": "done"},
        }
    if turn.thinking:
        line = f"💭 Thinking… {seconds:.0f} s"
    else:
        line = f"💭 Thought for {seconds:.1f} s. The reasoning is shown after you vote."
    return {"role": "assistant", "content": plain(line)}


ALREADY_VOTED = "This battle already had your vote, from another tab."
SESSION_LOST = (
    "The server lost track of this page (it restarted, or another one took over). "
    "Reload the page: your battle comes back, and you can vote on it."
)
SESSION_LOST_NO_COOKIE = (
    "The server lost track of this page (it restarted, or another one took over), and without "
    "cookies your battle cannot come back. Press New battle to start again."
)
CLOSED_ELSEWHERE = (
    "This battle was closed while it was being answered (in another tab, or by the server). "
    "Type a prompt to start a new one."
)
CUT_SHORT = "✂️ This answer was cut short: the model reached its token limit."


def _turn_messages(
    turn: TurnView,
    reasoning: str | None,
    revealed: bool,
    remote_images: bool = False,
    cut_short: bool = False,
) -> list[dict[str, Any]]:
    """One turn as chat messages. Text from people and models goes through arena.render:
    safe HTML that the page shows as is (docs/security.md)."""
    out: list[dict[str, Any]] = [
        {"role": "user", "content": render(turn.prompt, remote_images=remote_images)}
    ]
    if turn.thinking_seconds is not None or (revealed and reasoning and reasoning.strip()):
        out.append(_thinking(turn, reasoning, revealed, remote_images))
    if turn.error:
        out.append({"role": "assistant", "content": plain(f"⚠️ {turn.error}")})
    elif turn.content:
        content = render(turn.content, remote_images=remote_images, streaming=not turn.done)
        out.append({"role": "assistant", "content": content})
        if revealed and cut_short:  # after the vote only: a length limit can hint at a model
            out.append({"role": "assistant", "content": plain(CUT_SHORT)})
    elif turn.progress and not turn.done:
        out.append({"role": "assistant", "content": plain(turn.progress)})
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
        reasoning, cut_short = None, False
        if revealed is not None and i < len(revealed.reasoning):
            reasoning = revealed.reasoning[i]
        if revealed is not None and i < len(revealed.cut_short):
            cut_short = revealed.cut_short[i]
        out.extend(_turn_messages(turn, reasoning, revealed is not None, remote_images, cut_short))
    return out


def _status(view: BattleView, notice: str = "") -> str:
    lead = f"{notice} " if notice else ""
    if view.state is BattleState.ANSWERING:
        return lead + "Both models are answering…"
    if view.state is BattleState.AWAITING_VOTE:
        more = (
            f" or ask a follow-up ({view.turns_left} left)"
            if view.turns_left > 0
            else " (no follow-ups left)"
        )
        return f"{lead}**Which answer is better?** Vote below{more}."
    if view.state is BattleState.FAILED:
        return (
            "A side failed to answer, so this battle cannot be voted on. "
            "Press **New battle** to try again."
        )
    return lead


PLACEHOLDER = "Type your prompt and press Enter"


def _placeholder(view: BattleView | None, voted: bool = False) -> str:
    """What the prompt box says it is for, in every state of the battle (issue 9)."""
    if voted:
        return "Press New battle to play again"
    if view is None:
        return PLACEHOLDER
    if view.state is BattleState.ANSWERING:
        return "Wait for both answers…"
    if view.state is BattleState.AWAITING_VOTE and view.turns_left > 0:
        return f"Ask a follow-up ({view.turns_left} left), or vote above (Esc, then 1 to 4)"
    if view.state is BattleState.AWAITING_VOTE:
        return "No follow-ups left: vote above, or press New battle"
    return "Press New battle to try again"


# Keys that vote when the focus is not in the prompt box (arena/static/arena.js). Digits, not
# letters: a follow-up typed while the focus was elsewhere must not start with a vote.
VOTE_KEYS = {Outcome.A: "1", Outcome.B: "2", Outcome.TIE: "3", Outcome.BOTH_BAD: "4"}
VOTE_LABELS = {
    Outcome.A: "👈 A is better",
    Outcome.B: "👉 B is better",
    Outcome.TIE: "🤝 Tie",
    Outcome.BOTH_BAD: "👎 Both are bad",
}


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
    if cost := _compute(side):
        card += f'<p class="arena-compute">{cost}</p>'
    return card


def _compute(side: RevealedSide) -> str:
    """What the answers cost: tokens generated, and the samples and reward-model calls of a
    test-time-compute strategy (issue 7)."""
    if side.tokens is None:
        return ""
    turns = max(1, len(side.reasoning))
    words = [f"{side.tokens:,} tokens generated"]
    if side.samples > turns:
        words.append(f"{side.samples} samples")
    if side.reward_calls:
        words.append(f"{side.reward_calls} reward-model calls")
    return "Compute: " + ", ".join(words) + "."


def reveal_markdown(reveal: Reveal, remote_images: bool = False) -> str:
    """The reveal card: safe HTML on one line, which gr.Markdown passes through."""
    return (
        f'<div class="arena-md"><h3>Your vote: {OUTCOME_TEXT[reveal.outcome]}</h3>'
        f"{_side_card('Model A', reveal.a, remote_images)}"
        f"{_side_card('Model B', reveal.b, remote_images)}</div>"
    )


def arena_tab(app: App, blocks: gr.Blocks) -> None:
    """The battle page's components and events, inside the caller's Blocks.

    A refusal (an empty or too-long prompt, a limit, a vote too many) shows as a message and
    leaves the battle on screen as it was (issue 9): the prompt's own checks run in a Gradio
    validator, whose message sits under the box; any other refusal is a `gr.Error` toast, and
    its progress marker goes to an invisible component, not over the panes."""
    battles = app.battles
    config = app.config
    images = config.security.remote_images  # may answers load images (arena.render)?
    if config.demo:
        gr.Markdown(
            "🧪 **Demo mode:** the contestants are canned demo models served by "
            "`arena demo-models`, not real language models.",
            elem_classes=["arena-demo-banner"],
        )

    # No delete callback: a closed tab's battle stays for its voter to come back to (the page
    # gives it back at load); the sweeper closes it after `abandon_after_minutes`.
    session = gr.State(Session())
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
            outcome: gr.Button(
                f"{label} ({VOTE_KEYS[outcome]})",
                elem_id=f"vote-{outcome.value.replace('_', '-')}",
            )
            for outcome, label in VOTE_LABELS.items()
        }
    reveal = gr.Markdown(
        "", visible=False, elem_id="reveal", sanitize_html=True, latex_delimiters=LATEX
    )
    # The character counter and the browser's own prompt checks (arena/static/arena.js),
    # above the box so that a phone shows them where the voter looks.
    meter = gr.HTML(_meter(config), elem_id="prompt-meter-box", padding=False)
    with gr.Row():
        prompt = gr.Textbox(
            placeholder=PLACEHOLDER,
            label="Your prompt",  # shown only above a refusal of the server's prompt checks
            show_label=False,
            scale=8,
            max_lines=8,
            elem_id="prompt",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    new = gr.Button("🔄 New battle", elem_id="new-battle")
    # Where Gradio draws the progress and "Error" markers of these events: nowhere visible.
    # The status line says what is happening, and refusals are toasts (issue 9).
    marker = gr.HTML("", visible=False, elem_id="event-marker")

    outputs = [chat_a, chat_b, prompt, send, vote_row, status, reveal, session]
    resets = PageMarks()  # New battle pressed
    asks = PageMarks()  # a prompt sent
    # No concurrency limit: one voter's battle never waits for another's.
    quiet: dict[str, Any] = {"show_progress_on": [marker], "concurrency_limit": None}

    def render(view: BattleView, changed: bool = True, notice: str = "") -> tuple[Any, ...]:
        """`changed=False`: only the chats moved; the rest repeats the last full render
        (see below), because Gradio rebuilds a component's config for every update dict."""
        if not changed:
            # Plain values where a component takes one: Gradio builds a new component for
            # every update dict, gr.skip() included (about 1.5 ms each, issue 10). They
            # repeat what the last full render set. Skipped: the vote row, which has no
            # value, and the prompt box, which an update landing late (after New battle)
            # must not empty while the voter types.
            return (
                chat_messages(view.a, remote_images=images),
                chat_messages(view.b, remote_images=images),
                gr.skip(),
                "Send",
                gr.skip(),
                _status(view, notice),
                "",  # the reveal: hidden until the vote
                gr.skip(),  # a State's skip costs nothing
            )
        can_type = view.state is BattleState.AWAITING_VOTE and view.turns_left > 0
        return (
            chat_messages(view.a, remote_images=images),
            chat_messages(view.b, remote_images=images),
            gr.update(value="", interactive=can_type, placeholder=_placeholder(view)),
            gr.update(interactive=can_type),
            gr.update(visible=view.state is BattleState.AWAITING_VOTE),
            _status(view, notice),
            gr.update(value="", visible=False),
            Session(battle_id=view.battle_id, view=view),
        )

    def check_prompt(text: str, current: Session) -> list[Any]:
        """The checks a prompt can fail before anything counts: shown under the box, with
        the text kept for editing. `ask` checks again (a script need not call this)."""
        view = current.view
        why = battles.prompt_refusal(text)
        if why is None and view is not None and current.reveal is None:
            if view.state is BattleState.ANSWERING:
                why = "Wait for both answers before sending another message."
            elif view.state is BattleState.AWAITING_VOTE and view.turns_left == 0:
                why = "No follow-ups left in this battle: vote, or press New battle."
        return [gr.validate(why is None, why or ""), gr.validate(True, "")]

    async def ask(
        text: str, current: Session, request: gr.Request
    ) -> AsyncIterator[tuple[Any, ...]]:
        voter = voter_of(app.identity, request)
        page = getattr(request, "session_hash", None)
        asked = time.monotonic()
        asks.mark(page)
        try:
            view = current.view
            if current.battle_id and view and view.state is BattleState.AWAITING_VOTE:
                stream = battles.follow_up(current.battle_id, voter, text)
            else:
                stream = battles.start(voter, text)
            last_state = None
            async for view in stream:
                if last_state is None and resets.since(page, asked):
                    # New battle was pressed before this battle's first update reached the
                    # page (so it knew no battle to stop): this one is dropped too.
                    await battles.abandon(view.battle_id)
                    if (close := getattr(stream, "aclose", None)) is not None:
                        await close()  # its streams stop now, not when collected
                    yield tuple(gr.skip() for _ in outputs)
                    return
                if view.state is BattleState.ABANDONED:
                    if battles.stopping(view.battle_id):  # New battle took the page over
                        yield tuple(gr.skip() for _ in outputs)
                    else:  # closed elsewhere (another tab, or its process was given up)
                        yield _empty(CLOSED_ELSEWHERE)
                    return
                yield render(view, changed=view.state is not last_state)
                last_state = view.state
        except ArenaError as err:
            # A refusal is one line in the log at most, and no traceback (issue 9).
            raise gr.Error(str(err), print_exception=False) from None

    def voted(
        view: BattleView, result: Reveal, notice: str = "Thanks for voting!"
    ) -> tuple[Any, ...]:
        return (
            gr.update(
                value=chat_messages(view.a, result.a, remote_images=images),
                label=f"Model A: {result.a.model}",
            ),
            gr.update(
                value=chat_messages(view.b, result.b, remote_images=images),
                label=f"Model B: {result.b.model}",
            ),
            gr.update(value="", interactive=False, placeholder=_placeholder(view, True)),
            gr.update(interactive=False),
            gr.update(visible=False),
            f"{notice} Press **New battle** to play again.",
            gr.update(value=reveal_markdown(result, images), visible=True),
            Session(battle_id=result.battle_id, view=view, reveal=result),
        )

    async def stale_page(current: Session, voter: Voter, refusal: str) -> tuple[Any, ...] | None:
        """After a refused vote: if another tab of this voter moved the battle on, show it as
        it stands now rather than buttons that can only fail (review of issue 9). None: the
        page was not stale, and the refusal stands."""
        assert current.battle_id is not None and current.view is not None
        state, view, reveal = await battles.as_stored(current.battle_id, voter)
        if reveal is not None and view is not None and current.reveal is None:
            gr.Warning(ALREADY_VOTED)
            return voted(view, reveal, ALREADY_VOTED)
        if view is not None and len(view.a) != len(current.view.a):
            gr.Warning(refusal)
            return render(view, notice=refusal)
        stale = current.reveal is None and current.view.state is BattleState.AWAITING_VOTE
        if state in (BattleState.ABANDONED, BattleState.FAILED) and stale:
            gr.Warning(refusal)
            return _empty(f"{refusal} Type a prompt to start a new battle.")
        return None

    def voter_for(outcome: Outcome) -> Any:
        async def vote(current: Session, request: gr.Request) -> tuple[Any, ...]:
            voter = voter_of(app.identity, request)
            if not current.battle_id or current.view is None:
                # With a battle of the voter's still open, the page's session is gone: its
                # process died or the balancer moved the voter (docs/deploy.md, issue 10).
                why = "There is no battle to vote on yet."
                if await battles.has_open_battle(voter):
                    # Without a cookie a reload cannot find the battle (issue 9): start again.
                    cookieless = voter.id.startswith(SESSION_VOTER)
                    why = SESSION_LOST_NO_COOKIE if cookieless else SESSION_LOST
                raise gr.Error(why, print_exception=False)
            seen = len(current.view.a)
            try:
                result = await battles.vote(current.battle_id, voter, outcome, seen_turns=seen)
            except ArenaError as err:
                synced = await stale_page(current, voter, str(err))
                if synced is None:
                    raise gr.Error(str(err), print_exception=False) from None
                return synced
            return voted(current.view, result)

        vote.__name__ = f"vote_{outcome.value}"
        return vote

    async def new_battle(current: Session, request: gr.Request) -> tuple[Any, ...]:
        resets.mark(getattr(request, "session_hash", None))
        if current.battle_id and current.reveal is None:
            await battles.abandon(current.battle_id)
        return _empty()

    def _empty(notice: str = "") -> tuple[Any, ...]:
        return (
            gr.update(value=[], label="Model A"),
            gr.update(value=[], label="Model B"),
            gr.update(value="", interactive=True, placeholder=PLACEHOLDER),
            gr.update(interactive=True),
            gr.update(visible=False),
            notice,
            gr.update(value="", visible=False),
            Session(),
        )

    async def resume(request: gr.Request) -> AsyncIterator[tuple[Any, ...]]:
        """A reloaded page gets its voter's unvoted battle back (issue 9). The battle is
        looked up by the voter's cookie, so it is nobody else's. While a battle still being
        answered is waited for, the status line says so."""
        voter = voter_of(app.identity, request)
        page = getattr(request, "session_hash", None)
        opened = time.monotonic()
        # The counter's limit as the registry has it now (`arena admin reload` may change it).
        limit = _meter(app.config)
        unchanged = tuple(gr.skip() for _ in outputs)
        if voter.id.startswith(SESSION_VOTER):  # without a cookie, no earlier page is ours
            yield (*unchanged, limit)
            return
        waiting = asyncio.Event()
        lookup = asyncio.ensure_future(battles.resume(voter, waiting))
        lookup.add_done_callback(_retrieved)
        waited = asyncio.ensure_future(waiting.wait())
        said_waiting = False
        try:
            await asyncio.wait({lookup, waited}, return_when=asyncio.FIRST_COMPLETED)
            if not lookup.done():
                said_waiting = True
                yield (*_status_only(WAITING), limit)
            found = await lookup
        finally:  # Gradio closed the event (a stop, a cancel): stop looking
            lookup.cancel()
            waited.cancel()
        if asks.since(page, opened) or resets.since(page, opened):
            # The page moved on while this looked (a prompt sent, New battle): it keeps what
            # it shows, whose own status replaced any waiting notice.
            yield (*unchanged, limit)
        elif found is None:  # nothing to give back: a waiting notice shown meanwhile goes
            yield (*(_status_only("") if said_waiting else unchanged), limit)
        elif found.view is None:
            yield (*_empty(found.notice), limit)
        else:
            yield (*render(found.view, notice=found.notice), limit)

    def _status_only(text: str) -> tuple[Any, ...]:
        return tuple(text if block is status else gr.skip() for block in outputs)

    # One event for Send and Enter, so a session streams one battle at a time.
    gr.on(
        [send.click, prompt.submit],
        ask,
        [prompt, session],
        outputs,
        api_name="ask",
        validator=check_prompt,
        **quiet,
    )
    for outcome, button in vote_buttons.items():
        button.click(
            voter_for(outcome), [session], outputs, api_name=f"vote_{outcome.value}", **quiet
        )
    # New battle stops a streaming battle through the battle service, not Gradio's `cancels`:
    # a cancel that runs late kills whatever battle the session runs by then, which was the
    # voter's next one when they typed fast (issue 9).
    new.click(new_battle, [session], outputs, api_name="new_battle", **quiet)
    blocks.load(resume, None, [*outputs, meter], api_visibility="private", **quiet)
