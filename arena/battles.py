"""The battle service: two anonymous models answer the same prompts, then a vote.

Views handed to the UI never carry a model name, endpoint or reasoning text;
only `vote` returns a `Reveal`, and only after the vote is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from arena.answer import Answer
from arena.answer_style import estimate_tokens
from arena.categories import CategoryRules, RuleTagger, Tagger
from arena.config import ArenaConfig, ModelEntry, Registry
from arena.errors import BattleNotFound, ProviderError, TurnRejected, VoteRejected
from arena.identity import Action, Identity, Voter
from arena.leaks import LeakRules, LeakScanner, rules_for
from arena.lifecycle import BattleState, Outcome, Side
from arena.moderation import moderate
from arena.providers.base import Candidate, ChatMessage, ChatRequest, Chunk, Provider, Usage
from arena.router import Router, request_params
from arena.store import (
    BY_VOTER,
    BattleRecord,
    Store,
    turn_refusal,
    vote_refusal,
)

log = logging.getLogger(__name__)

# Coalesce tokens into UI updates at most this often; a reasoning timer ticks at least
# this often so the "thinking… N s" counter moves.
UPDATE_INTERVAL = 0.1
TICK_INTERVAL = 0.5


@dataclass(frozen=True)
class TurnView:
    prompt: str
    content: str = ""
    thinking_seconds: float | None = None  # None: this turn had no reasoning
    thinking: bool = False  # still reasoning
    error: str | None = None
    done: bool = False
    progress: str | None = None  # a strategy's word on its work, or that both come together


@dataclass(frozen=True)
class BattleView:
    """What the voter may see before the vote: no names, no reasoning text."""

    battle_id: str
    state: BattleState
    a: tuple[TurnView, ...]
    b: tuple[TurnView, ...]
    turns_left: int

    def side(self, side: Side) -> tuple[TurnView, ...]:
        return self.a if side is Side.A else self.b


@dataclass(frozen=True)
class RevealedSide:
    model: str
    organization: str
    license: str
    description: str
    unreleased: bool
    reasoning: tuple[str | None, ...]  # per turn
    cut_short: tuple[bool, ...] = ()  # per turn: stopped by the token limit (issue 9)
    # What the answers cost, summed over the turns (issue 7): shown after the vote, so that a
    # best-of-N side says what it spent.
    tokens: int | None = None
    samples: int = 0
    reward_calls: int = 0


@dataclass(frozen=True)
class Reveal:
    battle_id: str
    outcome: Outcome
    a: RevealedSide
    b: RevealedSide


@dataclass(frozen=True)
class Resumed:
    """What a reloaded page gets back (issue 9): the battle to show again, or, with `view`
    None, a plain word that the battle was lost."""

    view: BattleView | None
    notice: str


RESUMED = "Welcome back: here is your battle. Vote, or ask a follow-up."
RESUMED_NO_TURNS = "Welcome back: here is your battle, with no follow-ups left."
LOST = (
    "Your last battle was still being answered when the page closed, and it could not be "
    "kept. Type a prompt to start a new one."
)
# Shown by a reloaded page while it waits for that battle (review of issue 10: a page whose
# process died reloads itself onto another, and was blank for the whole wait).
WAITING = (
    "Your last battle was still being answered when this page closed or lost its connection. "
    "Waiting a few seconds to see whether it can be kept…"
)
ENDED = (
    "Your last battle ended in another tab while this page waited for it (voted, or closed), "
    "or a model failed. Type a prompt to start a new one."
)
CHANGED = (
    "This battle changed in another tab (a follow-up was asked there). Here it is as it "
    "stands now: vote on what you see."
)
# A battle cut off mid-answer is reported as lost for this long after; later it is old news.
LOST_NOTICE_SECONDS = 300.0
# A reloaded page waits this long for a battle still answering elsewhere to finish.
RESUME_WAIT_SECONDS = 30.0
RESUME_POLL_SECONDS = 0.5


@dataclass
class SideProgress:
    """One side's answer while it streams."""

    model: str
    prompt: str
    started: float = field(default_factory=time.monotonic)
    content: str = ""
    reasoning: str = ""
    first_token_at: float | None = None
    first_answer_at: float | None = None
    ended_at: float | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    error: str | None = None
    error_detail: str | None = None  # the server's own words: operator only
    endpoint: str | None = None
    progress: str | None = None
    candidates: tuple[Candidate, ...] = ()

    def apply(self, chunk: Chunk) -> None:
        t = time.monotonic()
        if chunk.retract_content:
            self.reasoning += self.content
            self.content = ""
            self.first_answer_at = None
        if chunk.reasoning:
            self.reasoning += chunk.reasoning.replace("\x00", "")
            self.first_token_at = self.first_token_at or t
        if chunk.content:
            self.content += chunk.content.replace("\x00", "")
            self.first_token_at = self.first_token_at or t
            self.first_answer_at = self.first_answer_at or t
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.endpoint:
            self.endpoint = chunk.endpoint
        if chunk.progress is not None:
            self.progress = chunk.progress
        if chunk.candidates:
            self.candidates = chunk.candidates

    def finish(self, error: str | None = None, detail: str | None = None) -> None:
        self.ended_at = time.monotonic()
        if error is None and not self.content.strip():
            error = "The model returned an empty answer."
        self.error = error
        self.error_detail = detail

    @property
    def done(self) -> bool:
        return self.ended_at is not None

    def _ms(self, t: float | None) -> float | None:
        return None if t is None else round((t - self.started) * 1000, 1)

    def view(self, together: bool = False, held: bool = False) -> TurnView:
        """What the voter sees of this side now. Under `reveal = "together"` the answers are
        `held` back until both are done, and nothing (progress, a thinking timer) tells one side
        from the other."""
        if held:
            return TurnView(prompt=self.prompt, progress=TOGETHER)
        thinking_seconds = None
        thinking = False
        # Reasoning that is only whitespace is no reasoning: no "Thought for 0.0 s" line.
        if self.reasoning.strip() and self.first_token_at is not None and not together:
            until = self.first_answer_at or self.ended_at or time.monotonic()
            thinking_seconds = max(0.0, until - self.first_token_at)
            thinking = self.first_answer_at is None and not self.done
        return TurnView(
            prompt=self.prompt,
            content=self.content,
            thinking_seconds=thinking_seconds,
            thinking=thinking,
            error=self.error,
            done=self.done,
            progress=None if self.done or self.content else self.progress,
        )

    def answer(self) -> Answer:
        """The finished answer as it is stored. A reasoning token count the server did not give
        is counted from the text, and the usage says which it was (issue 7)."""
        usage = self.usage
        if usage is not None and usage.reasoning_source is None:
            if usage.reasoning_tokens is not None:
                usage = replace(usage, reasoning_source="server")
            elif self.reasoning:
                count = estimate_tokens(self.reasoning)
                usage = replace(usage, reasoning_tokens=count, reasoning_source="counted")
        return Answer(
            model=self.model,
            content=self.content,
            reasoning=self.reasoning or None,
            usage=usage,
            ttft_ms=self._ms(self.first_token_at),
            answer_ms=self._ms(self.first_answer_at),
            duration_ms=self._ms(self.ended_at),
            finish_reason=self.finish_reason,
            error=self.error,
            error_detail=self.error_detail,
            endpoint=self.endpoint,
            candidates=self.candidates,
        )


# Both panes say this, word for word, while `reveal = "together"` holds the answers back.
TOGETHER = "Both answers will appear together when both are ready…"


def _past_turns(
    rows: Sequence[Mapping[str, Any]], side: Side, together: bool = False
) -> list[TurnView]:
    prompts: dict[int, str] = {}
    views: list[TurnView] = []
    for row in rows:
        if row["side"] != side.value:
            continue
        if row["role"] == "user":
            prompts[row["turn"]] = row["content"]
            continue
        thinking = None
        # Under `reveal = "together"` no thinking time is shown before the vote: it would tell
        # a long thinker from its rival, and sway the vote by latency.
        if row["reasoning"] and row["ttft_ms"] is not None and not together:
            end = row["answer_ms"] if row["answer_ms"] is not None else row["duration_ms"]
            thinking = max(0.0, ((end or 0.0) - row["ttft_ms"]) / 1000)
        views.append(
            TurnView(
                prompt=prompts.get(row["turn"], ""),
                content=row["content"],
                thinking_seconds=thinking,
                error=row["error"],
                done=True,
            )
        )
    return views


def _stored_view(
    battle: BattleRecord,
    rows: Sequence[Mapping[str, Any]],
    state: BattleState,
    turns_left: int,
    together: bool = False,
) -> BattleView:
    """A battle's turns as stored, in the anonymous shape the page shows before a vote."""
    return BattleView(
        battle_id=battle.id,
        state=state,
        a=tuple(_past_turns(rows, Side.A, together)),
        b=tuple(_past_turns(rows, Side.B, together)),
        turns_left=turns_left,
    )


def _cut_off_lately(battle: BattleRecord, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Was this abandoned battle cut off mid-answer (its last turn has no answers) a moment
    ago? Then the voter who reloads is told it was lost, not shown an empty page."""
    if battle.updated_at is None or battle.flags.get(BY_VOTER):
        return False  # the voter closed it themselves (New battle): nothing to tell
    updated = battle.updated_at
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    recent = (datetime.now(UTC) - updated).total_seconds() < LOST_NOTICE_SECONDS
    answered = any(r["role"] == "assistant" and r["turn"] == battle.turns for r in rows)
    return recent and not answered


def _history(rows: Sequence[Mapping[str, Any]], side: Side) -> list[ChatMessage]:
    return [
        ChatMessage(role=row["role"], content=row["content"])
        for row in rows
        if row["side"] == side.value
    ]


class AnswerCheck(Protocol):
    """One check of one answer while it streams (issue 8: nothing is left for vote time)."""

    def feed(self, text: str, final: bool) -> None: ...

    def found(self) -> list[str]: ...


# An answer hook makes one check per answer; `name` is the battle flag it sets, listing the sides
# where it found something, and `<name>_terms` keeps what it found, per side.
@dataclass(frozen=True)
class AnswerHook:
    name: str
    make: Callable[[ArenaConfig], AnswerCheck]


class _LeakCheck:
    def __init__(self, scanner: LeakScanner) -> None:
        self.scanner = scanner

    def feed(self, text: str, final: bool) -> None:
        self.scanner.feed(text, final)

    def found(self) -> list[str]:
        return sorted(self.scanner.found)


class LeakHook:
    """The identity-leak check (arena/leaks.py), its rules compiled once per registry."""

    def __init__(self) -> None:
        self._rules: tuple[ArenaConfig, LeakRules] | None = None

    def rules(self, config: ArenaConfig) -> LeakRules:
        cached = self._rules
        if cached is None or cached[0] is not config:
            names = [t for m in config.models for t in (m.name, m.organization, *m.aliases)]
            sec = config.security
            cached = (config, rules_for(names, sec.leak_terms, sec.builtin_leak_terms))
            self._rules = cached
        return cached[1]

    def hook(self) -> AnswerHook:
        return AnswerHook("identity_leak", lambda config: _LeakCheck(self.rules(config).scanner()))


# Characters a prompt may hold that show nothing alone: controls (C0 and C1, but tab and
# newlines), format characters (zero-width space, joiners, bidi marks), combining marks and
# variation selectors, unassigned code points, and blank letters (Hangul fillers, blank braille).
_INVISIBLE = {"Cc", "Cf", "Cn", "Cs", "Mn", "Me"}
_BLANK = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def check_text(prompt: str, max_chars: int) -> str:
    """The prompt as stored, or `TurnRejected` with what is wrong (issue 8, §3). Checked before
    anything is written or any model is called."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise TurnRejected(
            "Your message contains invalid characters (a broken emoji or symbol?). "
            "Please retype it."
        ) from None
    # PostgreSQL text cannot hold NUL; no prompt needs one.
    text = prompt.replace("\x00", "").strip()
    if len(text) > max_chars:
        raise TurnRejected(
            f"That message is too long ({len(text):,} characters; the limit is {max_chars:,})."
        )
    if not any(
        unicodedata.category(c) not in _INVISIBLE and not c.isspace() and c not in _BLANK
        for c in text
    ):
        raise TurnRejected("Type a message first.")
    return text


def _hook_flags(
    earlier: Mapping[str, Any], checks: Mapping[Side, Sequence[tuple[str, AnswerCheck]]]
) -> dict[str, Any] | None:
    """The battle flags this turn's checks add to those of earlier turns: per hook, the sides
    where it found something (`identity_leak: ["a"]`) and what (`identity_leak_terms`)."""
    flags: dict[str, Any] = {}
    for side, side_checks in checks.items():
        for name, check in side_checks:
            found = check.found()
            if not found:
                continue
            sides = set(flags.get(name, earlier.get(name, []))) | {side.value}
            flags[name] = sorted(sides)
            terms = dict(flags.get(f"{name}_terms", earlier.get(f"{name}_terms", {})))
            terms[side.value] = sorted({*terms.get(side.value, []), *found})
            flags[f"{name}_terms"] = terms
    return flags or None


class _Turn:
    """One turn of one battle while both sides answer: a stream task per side, the answer
    checks fed as text arrives, and the views the voter gets (issue 7: one job each)."""

    def __init__(
        self,
        config: ArenaConfig,
        battle: BattleRecord,
        turn: int,
        prompt: str,
        rows: Sequence[Mapping[str, Any]],
        hooks: Sequence[AnswerHook],
    ) -> None:
        self.battle = battle
        self.together = config.reveal == "together"
        self.turns_left = config.max_turns - turn
        self.progress = {s: SideProgress(model=battle.model(s), prompt=prompt) for s in Side}
        self.past = {s: _past_turns(rows, s, self.together) for s in Side}
        self.checks = {s: [(h.name, h.make(config)) for h in hooks] for s in Side}
        self.changed = asyncio.Event()  # set by a side on every chunk, and by `abandon`
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, side: Side, provider: Provider, request: ChatRequest) -> None:
        self.tasks.append(asyncio.create_task(self._stream(side, provider, request)))

    async def _stream(self, side: Side, provider: Provider, request: ChatRequest) -> None:
        """One side's answer, chunk by chunk into its progress; a failure ends it with a
        message for the voter (and the server's words for the operator)."""
        progress = self.progress[side]
        error: str | None = None
        detail: str | None = None
        try:
            async for chunk in provider.stream_chat(request):
                progress.apply(chunk)
                self.changed.set()
        except ProviderError as err:
            error, detail = str(err), err.detail
        except Exception:
            log.exception("battle %s side %s: unexpected failure", self.battle.id, side.value)
            error = "Something went wrong on this side."
        progress.finish(error, detail)
        self.changed.set()

    @property
    def done(self) -> bool:
        return all(p.done for p in self.progress.values())

    @property
    def held(self) -> bool:
        """Are the answers held back (reveal = together) with nothing new to show?"""
        return self.together and not self.done

    async def changes(self) -> AsyncIterator[None]:
        """Yield after something changed (or a tick passed, so a thinking timer moves), at most
        once per UPDATE_INTERVAL, until both sides are done. (Slowing updates under load was
        measured and not kept: docs/benchmarks.md, "Battles: many voters at once".)"""
        while not self.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), TICK_INTERVAL)
            self.changed.clear()
            yield
            await asyncio.sleep(UPDATE_INTERVAL)

    def check(self, final: bool) -> None:
        for side, p in self.progress.items():
            for _, check in self.checks[side]:
                check.feed(p.content, final=final)

    def view(self, state: BattleState) -> BattleView:
        a, b = (self.progress[s].view(self.together, self.held) for s in Side)
        return BattleView(
            battle_id=self.battle.id,
            state=state,
            a=(*self.past[Side.A], a),
            b=(*self.past[Side.B], b),
            turns_left=self.turns_left,
        )

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class BattleService:
    """Battles from first prompt to reveal. Every voter action passes `identity.admit` (bans and
    limits) and the input checks here, so the page and the scripted API are held alike."""

    def __init__(
        self,
        store: Store,
        router: Router,
        registry: Registry | ArenaConfig,
        identity: Identity | None = None,
        tagger: Tagger | None = None,
        http: httpx.AsyncClient | None = None,
        hooks: Sequence[AnswerHook] | None = None,
        instance: str | None = None,
    ) -> None:
        self.store = store
        # This process's name in `instances`: the owner of the battles it streams (issue 10).
        self.instance = instance
        self.router = router
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.identity = identity or Identity(
            secret_key=secrets.token_bytes(32), ip_salt=store.ip_salt()
        )
        config = self.registry.current
        self.tagger = tagger or RuleTagger(
            CategoryRules(long_prompt_chars=config.ratings.long_prompt_chars)
        )
        self.http = http or router.client
        self.hooks = list(hooks) if hooks is not None else [LeakHook().hook()]
        # Battles streaming in this process, each with the event that wakes its loop, and those
        # asked to stop (New battle): `abandon` stops a stream without cancelling Gradio events,
        # which could cancel the voter's next battle instead (issue 9).
        self._live: dict[str, asyncio.Event] = {}
        self._stop: set[str] = set()

    @property
    def config(self) -> ArenaConfig:
        """The registry as it is now; an operation reads it once and keeps that copy."""
        return self.registry.current

    def prompt_refusal(self, prompt: str) -> str | None:
        """Why this prompt would be refused on its own (empty, too long, broken text), or None;
        costs no quota and writes nothing."""
        try:
            check_text(prompt, self.config.max_prompt_chars)
        except TurnRejected as err:
            return str(err)
        return None

    async def _admit_prompt(
        self,
        config: ArenaConfig,
        voter: Voter,
        prompt: str,
        battle_id: str | None,
        *actions: Action,
    ) -> str:
        """Input checks, bans and limits, then moderation: all before anything is written
        (but a moderation event) or any model is called."""
        text = check_text(prompt, config.max_prompt_chars)
        await self.identity.admit(voter, Action.PROMPT, *actions)
        verdict = await moderate(self.http, config.moderation, text)
        if verdict is None or (not verdict.flagged and verdict.error is None):
            return text
        keep = config.moderation.store_text and verdict.flagged
        await asyncio.to_thread(
            self.store.record_moderation,
            voter_id=voter.id,
            ip_hash=voter.ip_hash,
            battle_id=battle_id,
            action="blocked" if verdict.flagged else "unchecked",
            reason=verdict.error or "flagged by the moderation endpoint",
            categories=verdict.categories,
            content=text if keep else None,
        )
        if verdict.error is not None and not verdict.flagged:
            log.warning("moderation: %s; the turn went through unchecked", verdict.error)
            return text
        if verdict.error is not None:
            raise TurnRejected("Your message could not be checked right now. Please try again.")
        what = f" ({', '.join(verdict.categories)})" if verdict.categories else ""
        raise TurnRejected(f"This arena's content policy does not allow that message{what}.")

    async def start(self, voter: Voter, prompt: str) -> AsyncIterator[BattleView]:
        """Draw two models, create the battle, and stream the first turn."""
        config = self.config
        check_text(prompt, config.max_prompt_chars)
        # Drawn before the limits count the prompt: when no two models can answer, the voter
        # is told so and keeps their quota (review of issue 7).
        model_a, model_b = self.router.pick_pair(config)
        text = await self._admit_prompt(config, voter, prompt, None, Action.BATTLE)
        battle_id = str(uuid.uuid4())
        await asyncio.to_thread(self.store.touch_voter, voter.id, voter.ip_hash)
        flags = {"demo": True} if config.demo else {}
        tags = await asyncio.to_thread(self.tagger.tag, text)
        battle = await asyncio.to_thread(
            self.store.create_battle,
            battle_id,
            voter.id,
            model_a.name,
            model_b.name,
            text,
            flags,
            tags,
            self.instance,
        )
        async for view in self._run_turn(config, battle, 1, text, []):
            yield view

    async def follow_up(
        self, battle_id: str, voter: Voter, prompt: str
    ) -> AsyncIterator[BattleView]:
        config = self.config
        battle = await asyncio.to_thread(self.store.battle, battle_id)
        if battle.voter_id is not None and battle.voter_id != voter.id:
            raise TurnRejected("This battle belongs to another session.")
        # Refused before the limits count it: a turn that cannot be taken costs no quota.
        if refusal := turn_refusal(battle, config.max_turns):
            raise TurnRejected(refusal)
        entries = [config.find(battle.model(side)) for side in Side]
        if any(e is None or not self.router.available(e) for e in entries):
            # The registry changed since the battle began, or a model has no server up right
            # now: the answers so far can still be voted on; a turn that would fail would
            # throw them away (review of issue 7).
            raise TurnRejected(
                "One of the models in this battle is not available right now, so it takes no "
                "follow-ups. Vote on the answers so far, or start a new battle."
            )
        text = await self._admit_prompt(config, voter, prompt, battle_id)
        rows = await asyncio.to_thread(self.store.messages, battle_id)
        turn = await asyncio.to_thread(
            self.store.begin_turn, battle_id, text, config.max_turns, self.instance
        )
        async for view in self._run_turn(config, battle, turn, text, rows):
            yield view

    async def _run_turn(
        self,
        config: ArenaConfig,
        battle: BattleRecord,
        turn: int,
        prompt: str,
        rows: Sequence[Mapping[str, Any]],
    ) -> AsyncIterator[BattleView]:
        """Stream one turn of both sides to the voter, check the answers as they come, store
        them, and abandon the battle if the stream ends any other way."""
        live = _Turn(config, battle, turn, prompt, rows, self.hooks)
        finished = False
        try:
            # Set-up inside the try: whatever fails here still abandons the battle below.
            for side in Side:
                entry = config.model(battle.model(side))
                request = ChatRequest(
                    messages=(*_history(rows, side), ChatMessage(role="user", content=prompt)),
                    params=request_params(entry),
                )
                live.start(side, self.router.provider(entry), request)
            self._live[battle.id] = live.changed
            yield live.view(BattleState.ANSWERING)
            async for _ in live.changes():
                if battle.id in self._stop:
                    # Abandoned (New battle). Gradio sends a stream's last update once more as
                    # it ends, so the last word is a view that changes nothing on the page.
                    yield live.view(BattleState.ABANDONED)
                    return
                live.check(final=False)
                if not live.held:  # a held view is the same as the last: nothing to send
                    yield live.view(BattleState.ANSWERING)
            live.check(final=True)
            answers = {side: p.answer() for side, p in live.progress.items()}
            flags = _hook_flags(battle.flags, live.checks)
            state = await asyncio.to_thread(self.store.finish_turn, battle.id, turn, answers, flags)
            finished = True
            if battle.id in self._stop:  # New battle came while the answers were being saved
                yield live.view(BattleState.ABANDONED)
                return
            yield live.view(state)
        finally:
            self._live.pop(battle.id, None)
            self._stop.discard(battle.id)
            if not finished:
                # The voter went away mid-answer (or we failed): stop both streams.
                await live.cancel()
                await asyncio.to_thread(self.store.abandon, battle.id)

    async def vote(
        self,
        battle_id: str,
        voter: Voter,
        outcome: Outcome | str,
        seen_turns: int | None = None,
    ) -> Reveal:
        """Commit the vote and reveal the names. `seen_turns`: how many turns the voter's page
        shows; a battle that has more (a follow-up from another tab) is refused, since the
        vote would judge answers the voter has not seen."""
        try:
            outcome = Outcome(outcome)
        except ValueError:
            raise VoteRejected(
                f"Unknown vote {outcome!r}; expected one of " + ", ".join(o.value for o in Outcome)
            ) from None
        battle = await asyncio.to_thread(self.store.battle, battle_id)
        if battle.status is BattleState.VOTED and await self._same_vote(battle, voter, outcome):
            # A double click, or a reloaded page voting again: the same answer, nothing new.
            return await self._reveal(battle, outcome)
        if refusal := vote_refusal(battle, voter.id):
            raise VoteRejected(refusal)  # before the limits count it
        if seen_turns is not None and seen_turns != battle.turns:
            raise VoteRejected(CHANGED)
        await self.identity.admit(voter, Action.VOTE)
        try:
            battle = await asyncio.to_thread(
                self.store.record_vote, battle_id, outcome, voter.id, voter.ip_hash
            )
        except VoteRejected:
            if not await self._same_vote(battle, voter, outcome):
                raise
            # Two clicks at once: the other one committed this same vote.
        return await self._reveal(battle, outcome)

    async def _same_vote(self, battle: BattleRecord, voter: Voter, outcome: Outcome) -> bool:
        prior = await asyncio.to_thread(self.store.vote, battle.id)
        return prior is not None and prior.voter_id == voter.id and prior.outcome is outcome

    async def _reveal(self, battle: BattleRecord, outcome: Outcome) -> Reveal:
        """The names, for a battle whose vote is committed: only now may they leave the server."""
        battle_id = battle.id
        rows = await asyncio.to_thread(self.store.messages, battle_id)
        return Reveal(
            battle_id=battle_id,
            outcome=outcome,
            a=self._revealed(battle, Side.A, rows),
            b=self._revealed(battle, Side.B, rows),
        )

    async def as_stored(
        self, battle_id: str, voter: Voter
    ) -> tuple[BattleState, BattleView | None, Reveal | None]:
        """The battle as the database has it now, for a page whose picture went stale (another
        tab of the same voter moved it on): its state, its turns while it still awaits a vote,
        and the reveal if it holds this voter's vote. Nobody else's battle is shown."""
        battle = await asyncio.to_thread(self.store.battle, battle_id)
        if battle.voter_id is not None and battle.voter_id != voter.id:
            return battle.status, None, None
        if battle.status is BattleState.VOTED:
            prior = await asyncio.to_thread(self.store.vote, battle_id)
            if prior is not None and prior.voter_id == voter.id:
                rows = await asyncio.to_thread(self.store.messages, battle_id)
                view = _stored_view(battle, rows, BattleState.VOTED, 0)
                return battle.status, view, await self._reveal(battle, prior.outcome)
            return battle.status, None, None
        if battle.status is not BattleState.AWAITING_VOTE:
            return battle.status, None, None
        rows = await asyncio.to_thread(self.store.messages, battle_id)
        turns_left = max(0, self.config.max_turns - battle.turns)
        together = self.config.reveal == "together"
        return battle.status, _stored_view(battle, rows, battle.status, turns_left, together), None

    async def has_open_battle(self, voter: Voter) -> bool:
        """Is the voter's newest battle still open (answering, or waiting for the vote)? A vote
        from a page that holds no battle then means the page lost its session: its process
        died, or the balancer moved the voter (issue 10)."""
        since = datetime.now(UTC) - timedelta(minutes=self.config.abandon_after_minutes)
        battle = await asyncio.to_thread(self.store.latest_battle, voter.id, since)
        open_states = (BattleState.ANSWERING, BattleState.AWAITING_VOTE)
        return battle is not None and battle.status in open_states

    async def resume(self, voter: Voter, waiting: asyncio.Event | None = None) -> Resumed | None:
        """The voter's unvoted battle, for a page that was reloaded or closed and opened again.
        A battle still answering (its stream belongs to the closed page, which may or may not
        still be running it) is waited for a while, then shown or reported as lost; `waiting`
        is set when that wait begins, so the page can say so meanwhile."""
        config = self.config
        loaded = datetime.now(UTC)  # a battle begun after this, the page itself began
        since = loaded - timedelta(minutes=config.abandon_after_minutes)
        waited = 0.0
        while True:
            battle = await asyncio.to_thread(self.store.latest_battle, voter.id, since, loaded)
            if battle is None or battle.status is not BattleState.ANSWERING:
                break
            if waited >= RESUME_WAIT_SECONDS:
                break
            if waiting is not None:
                waiting.set()
            await asyncio.sleep(RESUME_POLL_SECONDS)
            waited += RESUME_POLL_SECONDS
        if waited:  # the page may have begun a battle of its own meanwhile: that one wins
            newer = await asyncio.to_thread(self.store.latest_battle, voter.id, loaded)
            if newer is not None:
                return None
        if battle is not None and battle.status is BattleState.ANSWERING:
            return Resumed(None, LOST)  # waited for in vain
        if battle is None or battle.status not in (
            BattleState.AWAITING_VOTE,
            BattleState.ABANDONED,
        ):
            # Voted in another tab, or failed, while the page waited (and said so): say how
            # it ended instead. Without a wait, there is nothing to say.
            return Resumed(None, ENDED) if waited else None
        rows = await asyncio.to_thread(self.store.messages, battle.id)
        if battle.status is BattleState.ABANDONED:
            if _cut_off_lately(battle, rows):
                return Resumed(None, LOST)
            return Resumed(None, ENDED) if waited else None  # closed by New battle elsewhere
        turns_left = max(0, config.max_turns - battle.turns)
        together = config.reveal == "together"
        view = _stored_view(battle, rows, BattleState.AWAITING_VOTE, turns_left, together)
        return Resumed(view, RESUMED if turns_left else RESUMED_NO_TURNS)

    def _revealed(
        self, battle: BattleRecord, side: Side, rows: Sequence[Mapping[str, Any]]
    ) -> RevealedSide:
        name = battle.model(side)
        try:
            entry: ModelEntry | None = self.config.model(name)
        except KeyError:  # removed from the registry since the battle began
            entry = None
        answers = [row for row in rows if row["side"] == side.value and row["role"] == "assistant"]
        usages = [row["usage"] for row in answers if row["usage"]]
        return RevealedSide(
            model=name,
            organization=entry.organization if entry else "",
            license=entry.license if entry else "",
            description=entry.description if entry else "",
            unreleased=entry.unreleased if entry else False,
            reasoning=tuple(row["reasoning"] for row in answers),
            cut_short=tuple(row["finish_reason"] == "length" for row in answers),
            tokens=sum(u.get("completion_tokens") or 0 for u in usages) if usages else None,
            samples=sum(u.get("samples") or 0 for u in usages),
            reward_calls=sum(u.get("reward_calls") or 0 for u in usages),
        )

    async def sweep(self) -> int:
        """Abandon battles left unvoted longer than `abandon_after_minutes` (never sooner
        than a stream could still be running)."""
        minutes = max(self.config.abandon_after_minutes, self.config.timeouts.total / 60 + 1)
        before = datetime.now(UTC) - timedelta(minutes=minutes)
        count = await asyncio.to_thread(self.store.abandon_stale, before)
        if count:
            log.info("abandoned %d stale battles", count)
        return count

    async def abandon_orphans(self) -> int:
        """Abandon battles whose streaming process is gone (issue 10)."""
        config = self.config
        # Never sooner than three missed beats, whatever the settings say: a live process
        # must not lose its battles to a slow heartbeat (review of issue 10).
        window = max(config.owner_gone_seconds, 3 * config.heartbeat_seconds)
        gone = datetime.now(UTC) - timedelta(seconds=window)
        count = await asyncio.to_thread(self.store.abandon_orphans, gone)
        if count:
            log.info("abandoned %d battles whose arena process is gone", count)
        return count

    async def abandon(self, battle_id: str) -> None:
        """Close an unvoted battle at its voter's wish (New battle), and stop its answers if
        they stream in this process."""
        if (changed := self._live.get(battle_id)) is not None:
            self._stop.add(battle_id)
            changed.set()
        with contextlib.suppress(BattleNotFound):
            await asyncio.to_thread(self.store.abandon, battle_id, True)

    def stopping(self, battle_id: str) -> bool:
        """Is this battle's stream being stopped by its voter's New battle (rather than closed
        from elsewhere: another tab, or the process that streamed it gone)?"""
        return battle_id in self._stop
