"""Reads and writes of battles, turns and votes. Every rule that guards a vote is
checked inside one transaction here, so it holds across threads and replicas."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from arena import db
from arena.answer import Answer, compute_tokens
from arena.answer_style import answer_style, estimate_tokens
from arena.categories import Tagger, Tags
from arena.errors import BattleNotFound, TurnRejected, VoteRejected
from arena.lifecycle import TRANSITIONS, BattleState, Outcome, Side

MULTI_TURN = "multi_turn"  # the category of battles with a follow-up
# Meta row changed by every administrator's flag, so that the next ratings run rates again
# (arena.ratings_job reads it into its parameters).
FLAGS_VERSION = "flags_version"
BY_VOTER = "abandoned_by_voter"  # a battle flag: its voter closed it (New battle)


def now() -> datetime:
    return datetime.now(UTC)


def prompt_hash(prompt: str) -> str:
    """Hash of a prompt normalised for deduplication: case, whitespace and surrounding
    punctuation do not make a prompt new (docs/leaderboard.md)."""
    text = " ".join(prompt.casefold().split()).strip(" .!?,;:")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class BattleRecord:
    id: str
    status: BattleState
    model_a: str
    model_b: str
    turns: int
    voter_id: str | None
    flags: Mapping[str, Any]
    created_at: datetime
    categories: tuple[str, ...] = ()
    updated_at: datetime | None = None

    def model(self, side: Side) -> str:
        return self.model_a if side is Side.A else self.model_b


@dataclass(frozen=True)
class VoteRecord:
    battle_id: str
    outcome: Outcome
    voter_id: str | None
    created_at: datetime


_VOTE_REFUSALS = {
    BattleState.VOTED: "This battle already has a vote.",
    BattleState.ANSWERING: "Both answers must finish before you vote.",
    BattleState.FAILED: "A side failed to answer, so this battle cannot be voted on.",
    BattleState.ABANDONED: "This battle was closed without a vote.",
}


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- voters -------------------------------------------------------------------------

    def ip_salt(self) -> bytes:
        """The deployment's salt for hashing IPs, made once and kept in the database."""
        return self.secret("ip_salt")

    def secret(self, key: str) -> bytes:
        """A random 32-byte value made once per database and shared by every replica."""
        with self.engine.begin() as conn:
            value = conn.scalar(sa.select(db.meta.c.value).where(db.meta.c.key == key))
            if value is None:
                value = secrets.token_hex(32)
                try:
                    with conn.begin_nested():
                        conn.execute(db.meta.insert().values(key=key, value=value))
                except sa.exc.IntegrityError:  # another replica made it first
                    value = conn.scalar(sa.select(db.meta.c.value).where(db.meta.c.key == key))
        return bytes.fromhex(str(value))

    def meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.scalar(sa.select(db.meta.c.value).where(db.meta.c.key == key))
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                db.meta.update().where(db.meta.c.key == key).values(value=value)
            ).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(db.meta.insert().values(key=key, value=value))
                except sa.exc.IntegrityError:  # written concurrently: ours goes on top
                    conn.execute(db.meta.update().where(db.meta.c.key == key).values(value=value))

    def touch_voter(self, voter_id: str, ip_hash: str | None) -> None:
        t = now()
        with self.engine.begin() as conn:
            updated = conn.execute(
                db.voters.update()
                .where(db.voters.c.id == voter_id)
                .values(last_seen_at=t, ip_hash=ip_hash)
            ).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            db.voters.insert().values(
                                id=voter_id, created_at=t, last_seen_at=t, ip_hash=ip_hash
                            )
                        )
                except sa.exc.IntegrityError:
                    pass  # created concurrently; last_seen_at is close enough

    # -- battles ------------------------------------------------------------------------

    def create_battle(
        self,
        battle_id: str,
        voter_id: str | None,
        model_a: str,
        model_b: str,
        prompt: str,
        flags: Mapping[str, Any] | None = None,
        tags: Tags | None = None,
        owner: str | None = None,
    ) -> BattleRecord:
        """Create a battle with its first prompt and its category tags; it starts answering
        turn 1, streamed by the process `owner`."""
        t = now()
        with self.engine.begin() as conn:
            conn.execute(
                db.battles.insert().values(
                    id=battle_id,
                    created_at=t,
                    updated_at=t,
                    voter_id=voter_id,
                    model_a=model_a,
                    model_b=model_b,
                    status=BattleState.ANSWERING.value,
                    turns=1,
                    flags=dict(flags or {}),
                    categories=sorted(tags.categories) if tags else None,
                    language=tags.language if tags else None,
                    prompt_hash=prompt_hash(prompt),
                    owner=owner,
                )
            )
            self._insert_prompt(conn, battle_id, 1, prompt)
            return self._battle(conn, battle_id)

    @staticmethod
    def _insert_prompt(conn: Connection, battle_id: str, turn: int, prompt: str) -> None:
        t = now()
        for side in Side:
            conn.execute(
                db.messages.insert().values(
                    battle_id=battle_id,
                    side=side.value,
                    turn=turn,
                    role="user",
                    content=prompt,
                    created_at=t,
                )
            )

    def battle(self, battle_id: str) -> BattleRecord:
        with self.engine.connect() as conn:
            return self._battle(conn, battle_id)

    @staticmethod
    def _battle(conn: Connection, battle_id: str) -> BattleRecord:
        row = conn.execute(sa.select(db.battles).where(db.battles.c.id == battle_id)).first()
        if row is None:
            raise BattleNotFound("This battle does not exist.")
        return BattleRecord(
            id=row.id,
            status=BattleState(row.status),
            model_a=row.model_a,
            model_b=row.model_b,
            turns=row.turns,
            voter_id=row.voter_id,
            flags=row.flags or {},
            created_at=row.created_at,
            categories=tuple(row.categories or ()),
            updated_at=row.updated_at,
        )

    @staticmethod
    def _move(
        conn: Connection,
        battle_id: str,
        old: set[BattleState],
        new: BattleState,
        **values: Any,
    ) -> bool:
        """Compare-and-set the status: true if this call made the move."""
        assert all(new in TRANSITIONS[s] for s in old), f"{old} -> {new} is not a transition"
        result = conn.execute(
            db.battles.update()
            .where(db.battles.c.id == battle_id, db.battles.c.status.in_([s.value for s in old]))
            .values(status=new.value, updated_at=now(), **values)
        )
        return result.rowcount == 1

    def begin_turn(
        self, battle_id: str, prompt: str, max_turns: int, owner: str | None = None
    ) -> int:
        """Store a follow-up prompt for both sides and mark the battle as answering.

        Returns the new turn number (1-based).
        """
        with self.engine.begin() as conn:
            battle = self._battle(conn, battle_id)
            turn = battle.turns + 1
            if battle.status is not BattleState.AWAITING_VOTE:
                raise TurnRejected(_turn_refusal(battle.status))
            if turn > max_turns:
                raise TurnRejected(f"This battle has reached its limit of {max_turns} turns.")
            categories = sorted({*(battle.categories or ()), MULTI_TURN})
            moved = self._move(
                conn,
                battle_id,
                {BattleState.AWAITING_VOTE},
                BattleState.ANSWERING,
                turns=turn,
                categories=categories,
                owner=owner,
            )
            if not moved:
                raise TurnRejected("This battle changed meanwhile; please try again.")
            self._insert_prompt(conn, battle_id, turn, prompt)
        return turn

    def finish_turn(
        self,
        battle_id: str,
        turn: int,
        answers: Mapping[Side, Answer],
        flags: Mapping[str, Any] | None = None,
    ) -> BattleState:
        """Store both answers and merge `flags` into the battle's; the battle awaits a vote
        unless a side failed."""
        failed = any(a.error for a in answers.values())
        new = BattleState.FAILED if failed else BattleState.AWAITING_VOTE
        t = now()
        with self.engine.begin() as conn:
            for side, answer in answers.items():
                message_id = conn.execute(
                    db.messages.insert()
                    .values(
                        battle_id=battle_id,
                        side=side.value,
                        turn=turn,
                        role="assistant",
                        model=answer.model,
                        content=answer.content,
                        reasoning=answer.reasoning or None,
                        prompt_tokens=answer.prompt_tokens,
                        completion_tokens=answer.completion_tokens,
                        reasoning_tokens=answer.reasoning_tokens,
                        ttft_ms=answer.ttft_ms,
                        answer_ms=answer.answer_ms,
                        duration_ms=answer.duration_ms,
                        finish_reason=answer.finish_reason,
                        error=answer.error,
                        error_detail=answer.error_detail,
                        usage=answer.usage.as_dict() if answer.usage else None,
                        endpoint=answer.endpoint,
                        created_at=t,
                    )
                    .returning(db.messages.c.id)
                ).scalar_one()
                for position, c in enumerate(answer.candidates):
                    conn.execute(
                        db.candidates.insert().values(
                            message_id=message_id,
                            position=position,
                            content=c.content,
                            reasoning=c.reasoning,
                            score=c.score,
                            chosen=c.chosen,
                            usage=c.usage.as_dict() if c.usage else None,
                            endpoint=c.endpoint,
                            extracted=c.extracted,
                            step_scores=list(c.step_scores) if c.step_scores is not None else None,
                            error=c.error,
                        )
                    )
            self._add_style(conn, battle_id, answers)
            if flags:
                merged = {**self._battle(conn, battle_id).flags, **flags}
                conn.execute(
                    db.battles.update().where(db.battles.c.id == battle_id).values(flags=merged)
                )
            if not self._move(conn, battle_id, {BattleState.ANSWERING}, new):
                # Abandoned while streaming: keep the answers, leave the status alone.
                return self._battle(conn, battle_id).status
        return new

    @staticmethod
    def _add_style(conn: Connection, battle_id: str, answers: Mapping[Side, Answer]) -> None:
        """Add this turn's tokens and style counts to the battle's per-side sums: `tokens` is
        the compute the answer cost (every sample, every reward-model token; issue 7)."""
        values: dict[str, Any] = {}
        for side, answer in answers.items():
            reasoning_tokens = answer.reasoning_tokens
            if reasoning_tokens is None and answer.reasoning:
                reasoning_tokens = estimate_tokens(answer.reasoning)
            completion = answer.completion_tokens
            if answer.usage is not None and answer.usage.samples > 1:
                completion = None  # the sums span N samples: measure the chosen text itself
            style = answer_style(answer.content, completion, reasoning_tokens)
            style = replace(style, tokens=compute_tokens(answer)) if answer.usage else style
            for name in db.STYLE_COLUMNS:
                column = db.battles.c[f"{name}_{side.value}"]
                values[column.name] = sa.func.coalesce(column, 0) + getattr(style, name)
        conn.execute(db.battles.update().where(db.battles.c.id == battle_id).values(**values))

    def abandon_stale(self, before: datetime) -> int:
        """Abandon unvoted battles untouched since `before`: tabs long closed, sessions
        Gradio evicted, streams cut by a crash. Returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                db.battles.update()
                .where(
                    db.battles.c.status.in_(
                        [BattleState.ANSWERING.value, BattleState.AWAITING_VOTE.value]
                    ),
                    db.battles.c.updated_at < before,
                )
                .values(status=BattleState.ABANDONED.value, updated_at=now())
            )
            return int(result.rowcount)

    # -- processes (issue 10) ---------------------------------------------------------------

    def heartbeat(self, instance: str) -> None:
        """Say that the arena process `instance` is alive."""
        t = now()
        table = db.instances
        with self.engine.begin() as conn:
            seen = conn.execute(
                table.update().where(table.c.id == instance).values(seen_at=t)
            ).rowcount
            if not seen:
                conn.execute(table.insert().values(id=instance, started_at=t, seen_at=t))

    def retire(self, instance: str) -> None:
        """The process `instance` is stopping: it is gone from now on."""
        with self.engine.begin() as conn:
            conn.execute(db.instances.delete().where(db.instances.c.id == instance))

    def abandon_orphans(self, gone_before: datetime) -> int:
        """Abandon battles still answering whose process is gone: not heard from since
        `gone_before`, or no longer listed (stopped). Their streams died with the process.
        Battles without an owner (from before owners were kept) are left to the sweep."""
        table, instances = db.battles, db.instances
        alive = sa.select(instances.c.id).where(instances.c.seen_at >= gone_before)
        with self.engine.begin() as conn:
            result = conn.execute(
                table.update()
                .where(
                    table.c.status == BattleState.ANSWERING.value,
                    table.c.owner.is_not(None),
                    table.c.owner.not_in(alive),
                )
                .values(status=BattleState.ABANDONED.value, updated_at=now())
            )
            conn.execute(instances.delete().where(instances.c.seen_at < gone_before))
            return int(result.rowcount)

    def abandon(self, battle_id: str, by_voter: bool = False) -> bool:
        """Close an unvoted battle; `by_voter`: its voter asked to (New battle), which the
        battle's flags keep, so a reload does not report it as lost."""
        with self.engine.begin() as conn:
            moved = self._move(
                conn,
                battle_id,
                {BattleState.ANSWERING, BattleState.AWAITING_VOTE},
                BattleState.ABANDONED,
            )
            if moved and by_voter:
                flags = {**self._battle(conn, battle_id).flags, BY_VOTER: True}
                conn.execute(
                    db.battles.update().where(db.battles.c.id == battle_id).values(flags=flags)
                )
            return moved

    def backfill_categories(
        self, tagger: Tagger, *, only_missing: bool = True, page: int = 1000
    ) -> int:
        """Tag battles from their first prompt (`arena categories backfill`); imported battles
        without a prompt keep their tags. Returns how many were tagged."""
        b, m = db.battles.c, db.messages.c
        query = (
            sa.select(b.id, b.turns, m.content)
            .join(
                db.messages,
                sa.and_(m.battle_id == b.id, m.turn == 1, m.side == "a", m.role == "user"),
            )
            .order_by(b.id)
            .limit(page)
        )
        if only_missing:
            query = query.where(b.categories.is_(None))
        count = 0
        after = ""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query.where(b.id > after)).all()
            if not rows:
                return count
            with self.engine.begin() as conn:
                for row in rows:
                    tags = tagger.tag(row.content)
                    categories = set(tags.categories) | ({MULTI_TURN} if row.turns > 1 else set())
                    conn.execute(
                        db.battles.update()
                        .where(b.id == row.id)
                        .values(
                            categories=sorted(categories),
                            language=tags.language,
                            prompt_hash=prompt_hash(row.content),
                        )
                    )
            count += len(rows)
            after = rows[-1].id

    def latest_battle(
        self, voter_id: str, since: datetime, until: datetime | None = None
    ) -> BattleRecord | None:
        """This voter's newest battle begun between `since` and `until`: what a reloaded page
        looks for (issue 9)."""
        created = db.battles.c.created_at
        window = [created >= since] + ([created <= until] if until is not None else [])
        with self.engine.connect() as conn:
            battle_id = conn.scalar(
                sa.select(db.battles.c.id)
                .where(db.battles.c.voter_id == voter_id, *window)
                .order_by(db.battles.c.created_at.desc())
                .limit(1)
            )
            return None if battle_id is None else self._battle(conn, battle_id)

    def messages(self, battle_id: str) -> list[Mapping[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(db.messages)
                .where(db.messages.c.battle_id == battle_id)
                .order_by(db.messages.c.turn, db.messages.c.side, db.messages.c.id)
            )
            return [dict(r._mapping) for r in rows]

    # -- votes --------------------------------------------------------------------------

    def record_vote(
        self, battle_id: str, outcome: Outcome, voter_id: str | None, ip_hash: str | None
    ) -> BattleRecord:
        """Commit one vote. Refused unless the battle awaits a vote from this voter."""
        with self.engine.begin() as conn:
            battle = self._battle(conn, battle_id)
            if battle.voter_id is not None and battle.voter_id != voter_id:
                raise VoteRejected("This battle belongs to another session.")
            if not self._move(conn, battle_id, {BattleState.AWAITING_VOTE}, BattleState.VOTED):
                status = self._battle(conn, battle_id).status
                raise VoteRejected(_VOTE_REFUSALS.get(status, "This battle cannot take a vote."))
            try:
                conn.execute(
                    db.votes.insert().values(
                        battle_id=battle_id,
                        outcome=outcome.value,
                        voter_id=voter_id,
                        ip_hash=ip_hash,
                        created_at=now(),
                    )
                )
            except sa.exc.IntegrityError:
                raise VoteRejected(_VOTE_REFUSALS[BattleState.VOTED]) from None
            return self._battle(conn, battle_id)

    def vote(self, battle_id: str) -> VoteRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.votes).where(db.votes.c.battle_id == battle_id)).first()
        if row is None:
            return None
        return VoteRecord(row.battle_id, Outcome(row.outcome), row.voter_id, row.created_at)

    def count_votes(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(db.votes)) or 0)

    # -- integrity (docs/security.md) -----------------------------------------------------

    def record_moderation(
        self,
        *,
        voter_id: str | None,
        ip_hash: str | None,
        battle_id: str | None,
        action: str,
        reason: str,
        categories: Sequence[str] = (),
        content: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                db.moderation_events.insert().values(
                    created_at=now(),
                    voter_id=voter_id,
                    ip_hash=ip_hash,
                    battle_id=battle_id,
                    action=action,
                    categories=list(categories),
                    reason=reason,
                    content=content,
                )
            )

    def selective_voters(
        self, min_battles: int = 20, max_voted: float = 0.5, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Voters who started at least `min_battles` battles and voted on at most `max_voted` of
        them: a voter who votes only when they recognise a model leaves most battles unvoted
        (issue 8). A signal for review, not proof: many honest voters also walk away."""
        b = db.battles
        voted = sa.func.sum(sa.case((b.c.status == str(BattleState.VOTED), 1), else_=0))
        started = sa.func.count()
        query = (
            sa.select(b.c.voter_id, started.label("battles"), voted.label("voted"))
            .where(b.c.voter_id.is_not(None), b.c.source == "arena")
            .group_by(b.c.voter_id)
            .having(started >= min_battles, voted <= max_voted * started)
            .order_by(started.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {"voter": r.voter_id, "battles": int(r.battles), "voted": int(r.voted or 0)}
            for r in rows
        ]

    def integrity_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:

            def count(table: sa.Table, *where: Any) -> int:
                query = sa.select(sa.func.count()).select_from(table).where(*where)
                return int(conn.scalar(query) or 0)

            return {
                "bans": count(db.bans),
                "flagged_voters": count(db.voters, db.voters.c.flagged.is_not(None)),
                "moderation_blocked": count(
                    db.moderation_events, db.moderation_events.c.action == "blocked"
                ),
                "moderation_unchecked": count(
                    db.moderation_events, db.moderation_events.c.action == "unchecked"
                ),
            }

    def banned_ips(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(sa.select(db.bans.c.ip_hash)))

    def ban_ip(self, ip_hash: str, reason: str = "") -> bool:
        """Ban an address (given hashed); False when it was banned already."""
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        db.bans.insert().values(ip_hash=ip_hash, reason=reason, created_at=now())
                    )
            except sa.exc.IntegrityError:
                return False
        return True

    def unban_ip(self, ip_hash: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(db.bans.delete().where(db.bans.c.ip_hash == ip_hash)).rowcount)

    def flag_battle(self, battle_id: str, reason: str | None) -> None:
        """Set (or with None, clear) an administrator's flag on a battle: the ratings leave a
        flagged battle's vote out."""
        with self.engine.begin() as conn:
            flags = dict(self._battle(conn, battle_id).flags)
            if reason is None:
                flags.pop("flagged", None)
            else:
                flags["flagged"] = {"reason": reason, "at": now().isoformat()}
            conn.execute(
                db.battles.update().where(db.battles.c.id == battle_id).values(flags=flags)
            )
        self.set_meta(FLAGS_VERSION, secrets.token_hex(8))  # the next ratings run must rate

    def flag_voter(self, voter_id: str, reason: str | None) -> bool:
        """Set or clear a voter's flag; False when there is no such voter."""
        with self.engine.begin() as conn:
            found = conn.execute(
                db.voters.update().where(db.voters.c.id == voter_id).values(flagged=reason)
            ).rowcount
        if found:
            self.set_meta(FLAGS_VERSION, secrets.token_hex(8))
        return bool(found)

    def delete_text(self, before: datetime) -> int:
        """Blank the prompts and answers of battles created before `before` and no longer
        playing; their votes, counts and flags stay (the retention setting). Returns how many
        battles."""
        done = [BattleState.VOTED, BattleState.FAILED, BattleState.ABANDONED]
        with self.engine.begin() as conn:
            ids = sa.select(db.battles.c.id).where(
                db.battles.c.created_at < before,
                db.battles.c.text_deleted_at.is_(None),
                db.battles.c.status.in_([str(s) for s in done]),
            )
            message_ids = sa.select(db.messages.c.id).where(db.messages.c.battle_id.in_(ids))
            conn.execute(
                db.candidates.update()
                .where(db.candidates.c.message_id.in_(message_ids))
                # An extracted answer is a piece of the text; a sample's error can echo it.
                .values(content="", reasoning=None, extracted=None, error=None)
            )
            conn.execute(
                db.messages.update()
                .where(db.messages.c.battle_id.in_(ids))
                # A server's error text can echo the request, prompt included.
                .values(content="", reasoning=None, error_detail=None)
            )
            conn.execute(
                db.moderation_events.update()
                .where(db.moderation_events.c.created_at < before)
                .values(content=None)
            )
            return int(
                conn.execute(
                    db.battles.update()
                    .where(db.battles.c.id.in_(ids))
                    .values(text_deleted_at=now())
                ).rowcount
            )


def vote_refusal(battle: BattleRecord, voter_id: str | None) -> str | None:
    """Why this voter cannot vote on this battle now, or None: the battle service asks before it
    counts the vote against any limit; `record_vote` checks again in its transaction."""
    if battle.voter_id is not None and battle.voter_id != voter_id:
        return "This battle belongs to another session."
    if battle.status is not BattleState.AWAITING_VOTE:
        return _VOTE_REFUSALS.get(battle.status, "This battle cannot take a vote.")
    return None


def turn_refusal(battle: BattleRecord, max_turns: int) -> str | None:
    """Why this battle takes no follow-up now, or None (checked again by `begin_turn`)."""
    if battle.status is not BattleState.AWAITING_VOTE:
        return _turn_refusal(battle.status)
    if battle.turns >= max_turns:
        return f"This battle has reached its limit of {max_turns} turns."
    return None


def _turn_refusal(status: BattleState) -> str:
    return {
        BattleState.ANSWERING: "Wait for both answers before sending another message.",
        BattleState.VOTED: "This battle is over. Start a new battle to ask again.",
        BattleState.FAILED: "A side failed in this battle. Start a new battle.",
        BattleState.ABANDONED: "This battle was closed. Start a new battle.",
    }.get(status, "This battle cannot take another message.")
