"""A battle's life as an explicit state machine, and the vote outcomes."""

from __future__ import annotations

from enum import StrEnum


class BattleState(StrEnum):
    ANSWERING = "answering"  # a turn is streaming on both sides
    AWAITING_VOTE = "awaiting_vote"  # both sides finished cleanly: vote or follow up
    FAILED = "failed"  # a side failed: no vote is possible
    VOTED = "voted"  # vote committed, names revealed
    ABANDONED = "abandoned"  # left without a vote


TRANSITIONS: dict[BattleState, frozenset[BattleState]] = {
    BattleState.ANSWERING: frozenset(
        {BattleState.AWAITING_VOTE, BattleState.FAILED, BattleState.ABANDONED}
    ),
    BattleState.AWAITING_VOTE: frozenset(
        {BattleState.ANSWERING, BattleState.VOTED, BattleState.ABANDONED}
    ),
    BattleState.FAILED: frozenset(),
    BattleState.VOTED: frozenset(),
    BattleState.ABANDONED: frozenset(),
}


class Outcome(StrEnum):
    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"


class Side(StrEnum):
    A = "a"
    B = "b"
