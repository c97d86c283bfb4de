"""1,670,250 real Chatbot Arena votes against the leaderboard LMSYS published for 2024-08-13.

Data and name mapping: tests/data/SOURCES.md. The votes run two days past the published snapshot,
which is why the match is close but not exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from ratings import ELO_PER_UNIT, Leaderboard, fisher_pairwise, rate_pairs

from .conftest import RealVotes

ANCHOR_MODEL, ANCHOR_RATING = "mixtral-8x7b-instruct-v0.1", 1114.0


def board(votes: RealVotes, **options: object) -> Leaderboard:
    anchor = (votes.models.index(ANCHOR_MODEL), ANCHOR_RATING)
    return rate_pairs(votes.pc, anchor=anchor, **options)  # type: ignore[arg-type]


def compared(votes: RealVotes) -> tuple[list[int], list[str]]:
    """Indices (ours) and names (published) of the models in both files, anchor excluded."""
    idx, names = [], []
    for k, model in enumerate(votes.models):
        name = votes.published_name(model)
        if name in votes.published and model != ANCHOR_MODEL:
            idx.append(k)
            names.append(name)
    return idx, names


def published(votes: RealVotes, names: list[str], column: str) -> np.ndarray:
    return np.array([votes.published[n][column] for n in names])


def half_width_ratio(votes: RealVotes, b: Leaderboard) -> np.ndarray:
    idx, names = compared(votes)
    theirs = (published(votes, names, "rating_q975") - published(votes, names, "rating_q025")) / 2
    ours = (b.upper[idx] - b.lower[idx]) / 2
    return ours / theirs


def test_the_data_is_what_sources_md_says(real_votes: RealVotes) -> None:
    assert real_votes.pc.n_battles == 1_670_250
    np.testing.assert_array_equal(
        real_votes.pc.counts.sum(axis=0), [595_570, 498_305, 281_121, 295_254]
    )
    idx, _ = compared(real_votes)
    assert len(idx) == 127  # 128 shared models (one renamed) minus the anchor
    assert "gpt-4o-2024-08-06" not in real_votes.published


def test_ratings_match_the_published_leaderboard(real_votes: RealVotes) -> None:
    b = board(real_votes)
    k = real_votes.models.index(ANCHOR_MODEL)
    assert b.rating[k] == ANCHOR_RATING
    idx, names = compared(real_votes)
    theirs = published(real_votes, names, "rating")
    mae = float(np.mean(np.abs(b.rating[idx] - theirs)))
    assert mae <= 0.3, mae
    assert spearmanr(b.rating[idx], theirs).statistic >= 0.9999


def test_sandwich_half_widths_match_the_published_bootstrap(real_votes: RealVotes) -> None:
    ratio = half_width_ratio(real_votes, board(real_votes))
    assert 0.9 <= np.median(ratio) <= 1.1, np.median(ratio)
    assert np.median(np.abs(ratio - 1.0)) <= 0.10


def test_bootstrap_half_widths_match_the_published_bootstrap(real_votes: RealVotes) -> None:
    b = board(real_votes, ci="bootstrap", rounds=500, rng=np.random.default_rng(20240813))
    ratio = half_width_ratio(real_votes, b)
    assert 0.9 <= np.median(ratio) <= 1.1, np.median(ratio)
    assert np.median(np.abs(ratio - 1.0)) <= 0.10
    # Same point estimates whichever interval is asked for.
    np.testing.assert_array_equal(b.rating, board(real_votes).rating)


def test_plain_fisher_intervals_would_be_too_wide(real_votes: RealVotes) -> None:
    b = board(real_votes)
    fit = b.fit
    n = real_votes.pc.n_models
    anchor = real_votes.models.index(ANCHOR_MODEL)
    c = np.eye(n) - np.eye(n)[anchor]
    fisher_sd = ELO_PER_UNIT * np.sqrt(np.diag(c @ fisher_pairwise(real_votes.pc, fit) @ c.T))  # type: ignore[arg-type]
    sandwich_sd = np.sqrt(np.diag(b.covariance))  # type: ignore[arg-type]
    idx, _ = compared(real_votes)
    too_wide = fisher_sd[idx] / sandwich_sd[idx]
    # Ties (35% of these votes) make the Fisher interval about a quarter too wide.
    assert 1.13 <= np.median(too_wide) <= 1.35
    fisher_board_ratio = np.median(too_wide * half_width_ratio(real_votes, b))
    assert fisher_board_ratio > 1.1  # it would fail the 10% check above


def test_the_prior_barely_moves_well_measured_models(real_votes: RealVotes) -> None:
    with_prior = board(real_votes).rating
    without = board(real_votes, prior=0.0).rating
    assert np.max(np.abs(with_prior - without)) < 0.5


@pytest.mark.parametrize("ci", ["sandwich", "bootstrap"])
def test_ranks_follow_the_intervals(real_votes: RealVotes, ci: str) -> None:
    b = board(real_votes, ci=ci, rounds=100, rng=np.random.default_rng(0))
    for k in range(real_votes.pc.n_models):
        above = np.sum(b.lower > b.upper[k])
        assert b.rank_ub[k] == 1 + above
    top = int(np.argmax(b.rating))
    assert b.rank_ub[top] == 1
    assert real_votes.models[top] == "chatgpt-4o-latest"
