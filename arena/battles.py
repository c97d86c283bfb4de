"""The battle service: two anonymous models answer the same prompts, then a vote.

Views handed to the UI never carry a model name, endpoint or reasoning text;
only `vote` returns a `Reveal`, and only after the vote is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from arena.categories import CategoryRules, RuleTagger, Tagger
from arena.config import ArenaConfig, ModelEntry
from arena.errors import BattleNotFound, ProviderError, TurnRejected, VoteRejected
from arena.lifecycle import BattleState, Outcome, Side
from arena.providers.base import ChatMessage, ChatRequest, Chunk, Provider, Usage
from arena.router import Router
from arena.store import AnswerRecord, BattleRecord, Store

log = logging.getLogger(__name__)

# Coalesce tokens into UI updates at most this often; a reasoning timer ticks at least
# this often so the "thinking… N s" counter moves.
UPDATE_INTERVAL = 0.1
TICK_INTERVAL = 0.5


@dataclass(frozen=True)
class Voter:
    id: str
    ip: str | None = None


@dataclass(frozen=True)
class TurnView:
    prompt: str
    content: str = ""
    thinking_seconds: float | None = None  # None: this turn had no reasoning
    thinking: bool = False  # still reasoning
    error: str | None = None
    done: bool = False


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


@dataclass(frozen=True)
class Reveal:
    battle_id: str
    outcome: Outcome
    a: RevealedSide
    b: RevealedSide


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

    def finish(self, error: str | None = None) -> None:
        self.ended_at = time.monotonic()
        if error is None and not self.content.strip():
            error = "The model returned an empty answer."
        self.error = error

    @property
    def done(self) -> bool:
        return self.ended_at is not None

    def _ms(self, t: float | None) -> float | None:
        return None if t is None else round((t - self.started) * 1000, 1)

    def view(self) -> TurnView:
        thinking_seconds = None
        thinking = False
        if self.reasoning and self.first_token_at is not None:
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
        )

    def record(self) -> AnswerRecord:
        usage = self.usage
        return AnswerRecord(
            model=self.model,
            content=self.content,
            reasoning=self.reasoning or None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            ttft_ms=self._ms(self.first_token_at),
            answer_ms=self._ms(self.first_answer_at),
            duration_ms=self._ms(self.ended_at),
            finish_reason=self.finish_reason,
            error=self.error,
            usage=_usage_dict(usage),
        )


def _usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "samples": 1,
    }


def _past_turns(rows: Sequence[Mapping[str, Any]], side: Side) -> list[TurnView]:
    prompts: dict[int, str] = {}
    views: list[TurnView] = []
    for row in rows:
        if row["side"] != side.value:
            continue
        if row["role"] == "user":
            prompts[row["turn"]] = row["content"]
            continue
        thinking = None
        if row["reasoning"] and row["ttft_ms"] is not None:
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


def _history(rows: Sequence[Mapping[str, Any]], side: Side) -> list[ChatMessage]:
    return [
        ChatMessage(role=row["role"], content=row["content"])
        for row in rows
        if row["side"] == side.value
    ]


def names_itself(entry: ModelEntry, text: str) -> bool:
    """Does an answer state its model's name or maker? Such a battle is no longer blind.

    Flagged, not blocked: the battle stays votable and the flag lets ratings leave it out.
    """
    lowered = text.lower()
    terms = [entry.name, entry.organization]
    return any(len(term) >= 3 and term.lower() in lowered for term in terms)


class BattleService:
    def __init__(
        self,
        store: Store,
        router: Router,
        config: ArenaConfig,
        ip_salt: bytes,
        tagger: Tagger | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.config = config
        self._salt = ip_salt
        self.tagger = tagger or RuleTagger(
            CategoryRules(long_prompt_chars=config.ratings.long_prompt_chars)
        )

    def ip_hash(self, ip: str | None) -> str | None:
        if not ip:
            return None
        return hmac.new(self._salt, ip.encode(), hashlib.sha256).hexdigest()

    def _check_prompt(self, prompt: str) -> str:
        # PostgreSQL text cannot hold NUL; no prompt needs one.
        text = prompt.replace("\x00", "").strip()
        if not text:
            raise TurnRejected("Type a message first.")
        if len(text) > self.config.max_prompt_chars:
            raise TurnRejected(
                f"That message is too long ({len(text)} characters; "
                f"the limit is {self.config.max_prompt_chars})."
            )
        return text

    async def start(self, voter: Voter, prompt: str) -> AsyncIterator[BattleView]:
        """Draw two models, create the battle, and stream the first turn."""
        text = self._check_prompt(prompt)
        model_a, model_b = self.router.pick_pair()
        battle_id = str(uuid.uuid4())
        await asyncio.to_thread(self.store.touch_voter, voter.id, self.ip_hash(voter.ip))
        flags = {"demo": True} if self.config.demo else {}
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
        )
        async for view in self._run_turn(battle, 1, text, []):
            yield view

    async def follow_up(
        self, battle_id: str, voter: Voter, prompt: str
    ) -> AsyncIterator[BattleView]:
        text = self._check_prompt(prompt)
        battle = await asyncio.to_thread(self.store.battle, battle_id)
        if battle.voter_id is not None and battle.voter_id != voter.id:
            raise TurnRejected("This battle belongs to another session.")
        if any(self.config.find(battle.model(side)) is None for side in Side):
            # The registry changed since the battle began: the answers so far can still be
            # voted on, but the missing model cannot answer again.
            raise TurnRejected(
                "One of the models in this battle is no longer available, so it takes no "
                "follow-ups. Vote on the answers so far, or start a new battle."
            )
        rows = await asyncio.to_thread(self.store.messages, battle_id)
        turn = await asyncio.to_thread(
            self.store.begin_turn, battle_id, text, self.config.max_turns
        )
        async for view in self._run_turn(battle, turn, text, rows):
            yield view

    async def _run_turn(
        self,
        battle: BattleRecord,
        turn: int,
        prompt: str,
        rows: Sequence[Mapping[str, Any]],
    ) -> AsyncIterator[BattleView]:
        progress = {side: SideProgress(model=battle.model(side), prompt=prompt) for side in Side}
        past = {side: _past_turns(rows, side) for side in Side}
        turns_left = self.config.max_turns - turn
        changed = asyncio.Event()

        def view(state: BattleState) -> BattleView:
            return BattleView(
                battle_id=battle.id,
                state=state,
                a=(*past[Side.A], progress[Side.A].view()),
                b=(*past[Side.B], progress[Side.B].view()),
                turns_left=turns_left,
            )

        async def pump(side: Side, provider: Provider, request: ChatRequest) -> None:
            side_progress = progress[side]
            error: str | None = None
            try:
                async for chunk in provider.stream_chat(request):
                    side_progress.apply(chunk)
                    changed.set()
            except ProviderError as err:
                error = str(err)
            except Exception:
                log.exception("battle %s side %s: unexpected failure", battle.id, side.value)
                error = "Something went wrong on this side."
            side_progress.finish(error)
            changed.set()

        tasks: list[asyncio.Task[None]] = []
        finished = False
        try:
            # Set-up inside the try: whatever fails here still abandons the battle below.
            for side in Side:
                entry = self.config.model(battle.model(side))
                messages = (*_history(rows, side), ChatMessage(role="user", content=prompt))
                request = ChatRequest(messages=messages, params=dict(entry.params))
                provider = self.router.provider(entry)
                tasks.append(asyncio.create_task(pump(side, provider, request)))
            yield view(BattleState.ANSWERING)
            while not all(p.done for p in progress.values()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), TICK_INTERVAL)
                changed.clear()
                yield view(BattleState.ANSWERING)
                await asyncio.sleep(UPDATE_INTERVAL)
            answers = {side: p.record() for side, p in progress.items()}
            leaks = {
                side.value
                for side, p in progress.items()
                if (found := self.config.find(p.model)) and names_itself(found, p.content)
            }
            earlier = set(battle.flags.get("identity_leak", []))
            flags = {"identity_leak": sorted(leaks | earlier)} if leaks else None
            state = await asyncio.to_thread(self.store.finish_turn, battle.id, turn, answers, flags)
            finished = True
            yield view(state)
        finally:
            if not finished:
                # The voter went away mid-answer (or we failed): stop both streams.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.to_thread(self.store.abandon, battle.id)

    async def vote(self, battle_id: str, voter: Voter, outcome: Outcome | str) -> Reveal:
        try:
            outcome = Outcome(outcome)
        except ValueError:
            raise VoteRejected(
                f"Unknown vote {outcome!r}; expected one of " + ", ".join(o.value for o in Outcome)
            ) from None
        battle = await asyncio.to_thread(
            self.store.record_vote, battle_id, outcome, voter.id, self.ip_hash(voter.ip)
        )
        # The vote is committed: only now may the names leave the server.
        rows = await asyncio.to_thread(self.store.messages, battle_id)
        return Reveal(
            battle_id=battle_id,
            outcome=outcome,
            a=self._revealed(battle, Side.A, rows),
            b=self._revealed(battle, Side.B, rows),
        )

    def _revealed(
        self, battle: BattleRecord, side: Side, rows: Sequence[Mapping[str, Any]]
    ) -> RevealedSide:
        name = battle.model(side)
        try:
            entry: ModelEntry | None = self.config.model(name)
        except KeyError:  # removed from the registry since the battle began
            entry = None
        reasoning = tuple(
            row["reasoning"]
            for row in rows
            if row["side"] == side.value and row["role"] == "assistant"
        )
        return RevealedSide(
            model=name,
            organization=entry.organization if entry else "",
            license=entry.license if entry else "",
            description=entry.description if entry else "",
            unreleased=entry.unreleased if entry else False,
            reasoning=reasoning,
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

    def abandon_now(self, battle_id: str) -> None:
        """Close an unvoted battle (blocking); a voted one is left as it is."""
        with contextlib.suppress(BattleNotFound):
            self.store.abandon(battle_id)

    async def abandon(self, battle_id: str) -> None:
        await asyncio.to_thread(self.abandon_now, battle_id)
