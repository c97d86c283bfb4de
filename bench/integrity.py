"""The vote-integrity stages against planted bad voters: `python -m bench.integrity`.

A simulated arena (`ratings.simulate.simulate_voters`): honest voters whose outcomes follow
Bradley–Terry with known strengths, plus bad voters: random buttons, always "A", an omnipresent
rigger who votes for a target model in its battles and presses a random button otherwise, and
(in the second arena) a target-only rigger who votes honestly otherwise. The real exclusion
pipeline (`arena.ratings_job.apply_stages`) runs over the votes in memory with each of
`PIPELINES`: everything off, each defence alone, and all of them.

Two arenas (`SCENARIOS`): **burst**, 12 models 20 rating points apart, where the bad voters cast
their votes within three days (over the daily caps); and **spread**, 20 models 5 points apart
(as close as the public board's neighbours), where they spread them over 30 days, under the caps.

Printed per arena: the share of each kind of voter that the anomaly test flagged, among the
voters it tested (true positives for the bad kinds, false positives for the honest); and, per
pipeline, the target model's rank and rating in a fit of the counted votes
(`ratings.rate_arena`, the job's default options, upset weights included) against a fit of the
honest votes alone. The figures depend only on the seed (`--seed`).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from arena.config import ArenaConfig, RatingsConfig
from arena.ratings_job import Context, Votes, apply_stages
from ratings import ELO_PER_UNIT, RatingOptions, rate_arena
from ratings.simulate import HONEST, VOTER_KINDS, VoterBattles, simulate_voters

# The integrity stages switched off.
OFF: dict[str, Any] = {
    "anomaly_alpha": 0.0,
    "counted_per_day_voter": 0,
    "counted_per_day_ip": 0,
    "upset_weight": 1.0,
}
_DEFAULT = RatingsConfig()
# The pipelines compared (label -> `[ratings]` settings): each defence alone, then all of them.
PIPELINES: dict[str, dict[str, Any]] = {
    "off": OFF,
    "daily caps only": {
        **OFF,
        "counted_per_day_voter": _DEFAULT.counted_per_day_voter,
        "counted_per_day_ip": _DEFAULT.counted_per_day_ip,
    },
    "anomaly test only": {**OFF, "anomaly_alpha": _DEFAULT.anomaly_alpha},
    "upsets weigh 0.5 only": {**OFF, "upset_weight": 0.5},
    "on (defaults)": {},
    "on, upsets weigh 0.5": {"upset_weight": 0.5},
}


@dataclass(frozen=True)
class Scenario:
    name: str = "burst"
    models: int = 12
    gap: float = 20.0  # rating points between neighbouring models
    honest: int = 1500
    mean_votes: float = 15.0  # votes per honest voter, on average (geometric)
    days: int = 14
    bad: Mapping[str, int] = field(
        default_factory=lambda: {"random": 20, "always_a": 20, "omnipresent": 10}
    )
    bad_votes: Mapping[str, int] = field(  # votes per bad voter of each kind
        default_factory=lambda: {"random": 60, "always_a": 60, "omnipresent": 400}
    )
    bad_days: int = 3  # the bad voters' votes fall in the first days
    target: int = 3  # the rigged model, by true strength from the bottom (0 = weakest)
    rigger_ips: int = 2  # addresses the riggers share
    seed: int = 0

    def theta(self) -> NDArray[np.float64]:
        """True strengths, evenly spaced by `gap` rating points, centred on 0."""
        steps = np.arange(self.models) - (self.models - 1) / 2
        return np.asarray(steps * self.gap / ELO_PER_UNIT, dtype=np.float64)

    def simulate(self) -> VoterBattles:
        return simulate_voters(
            self.theta(),
            np.random.default_rng(self.seed),
            honest=self.honest,
            mean_votes=self.mean_votes,
            days=self.days,
            bad=self.bad,
            bad_votes=self.bad_votes,
            target=self.target,
            rigger_ips=self.rigger_ips,
            bad_days=self.bad_days,
        )


SCENARIOS = {
    "burst": Scenario(),
    "spread": Scenario(
        name="spread",
        models=20,
        gap=5.0,
        honest=20_000,
        days=30,
        bad={"random": 100, "always_a": 100, "omnipresent": 20, "target_only": 20},
        bad_votes={"random": 100, "always_a": 100, "omnipresent": 600, "target_only": 600},
        bad_days=30,
        target=5,
        rigger_ips=4,
    ),
}


@dataclass(frozen=True)
class Outcome:
    """One pipeline over one simulated arena."""

    label: str
    flagged: dict[str, int]  # per kind of voter: voters the anomaly test flagged
    removed: dict[str, int]  # per stage: votes removed
    counted: int
    target_rank: int  # 1 = best
    target_rating: float


@dataclass(frozen=True)
class Report:
    scenario: Scenario
    votes: int
    voters: dict[str, int]  # per kind
    tested: dict[str, int]  # per kind: voters with enough votes for the anomaly test
    honest_rank: int  # the target's rank in a fit of the honest votes alone
    honest_rating: float
    outcomes: list[Outcome]

    def outcome(self, label: str) -> Outcome:
        return next(o for o in self.outcomes if o.label == label)

    def rate(self, label: str, kind: str) -> float:
        """Share of the tested voters of `kind` that pipeline `label` flagged."""
        base = self.tested[kind]
        return self.outcome(label).flagged[kind] / base if base else math.nan

    def places(self, label: str) -> int:
        """Places pipeline `label` moves the target up from its honest rank."""
        return self.honest_rank - self.outcome(label).target_rank

    def gain(self, label: str) -> float:
        """Rating points pipeline `label` gives the target over its honest rating."""
        return self.outcome(label).target_rating - self.honest_rating


def names(n: int) -> list[str]:
    return [f"model-{k:02d}" for k in range(n)]


def votes_of(sim: VoterBattles, n_models: int) -> Votes:
    return Votes.of(
        sim.model_a,
        sim.model_b,
        sim.outcome,
        names(n_models),
        voter=sim.voter,
        ip=sim.ip,
        day=sim.day,
    )


def config(**ratings: Any) -> ArenaConfig:
    """A configuration with these `[ratings]` settings and no registry (every model is public
    through `Context.rated_models`)."""
    return ArenaConfig(models=(), ratings=replace(RatingsConfig(), **ratings))


def target_rank(
    votes: Votes,
    mask: NDArray[np.bool_],
    target: int,
    options: RatingOptions,
    weights: NDArray[np.float64] | None = None,
) -> tuple[int, float]:
    """The target's rank (1 = best) and rating in a fit of the votes in `mask`."""
    sel = np.flatnonzero(mask)
    board = rate_arena(
        votes.model_a[sel],
        votes.model_b[sel],
        votes.outcome[sel],
        len(votes.models),
        options=options,
        weights=None if weights is None else weights[sel],
        rng=np.random.default_rng(options.seed),
    )
    rating = board.rating
    return 1 + int(np.sum(rating > rating[target])), float(rating[target])


def run_pipeline(
    label: str, votes: Votes, kinds: NDArray[np.str_], cfg: ArenaConfig, target: int
) -> Outcome:
    ctx = Context(cfg, frozenset(votes.models))
    kept, stages = apply_stages(votes, ctx)
    index = {name: k for k, name in enumerate(votes.voters)}
    flagged_kinds = kinds[[index[name] for name in ctx.review.anomalous_voters]]
    rank, rating = target_rank(votes, kept, target, cfg.rating_options, ctx.review.weights)
    return Outcome(
        label=label,
        flagged={kind: int(np.sum(flagged_kinds == kind)) for kind in VOTER_KINDS},
        removed={s["name"]: s["removed"] for s in stages},
        counted=int(kept.sum()),
        target_rank=rank,
        target_rating=rating,
    )


def evaluate(scenario: Scenario, pipelines: Mapping[str, Mapping[str, Any]] = PIPELINES) -> Report:
    """The scenario's arena through each pipeline (label -> `[ratings]` settings)."""
    sim = scenario.simulate()
    votes = votes_of(sim, scenario.models)
    kinds = np.asarray(sim.kinds)
    # Tested: voters with at least anomaly_min_votes votes. In these arenas only the daily caps
    # remove votes before the test, and only bad voters', who keep enough.
    tested = np.bincount(sim.voter, minlength=kinds.size) >= _DEFAULT.anomaly_min_votes
    honest_rank, honest_rating = target_rank(
        votes, kinds[sim.voter] == HONEST, scenario.target, RatingOptions()
    )
    return Report(
        scenario=scenario,
        votes=len(votes),
        voters={kind: int(np.sum(kinds == kind)) for kind in VOTER_KINDS},
        tested={kind: int(np.sum((kinds == kind) & tested)) for kind in VOTER_KINDS},
        honest_rank=honest_rank,
        honest_rating=honest_rating,
        outcomes=[
            run_pipeline(label, votes, kinds, config(**settings), scenario.target)
            for label, settings in pipelines.items()
        ],
    )


def print_report(report: Report) -> None:
    s = report.scenario
    print(
        f"### {s.name}: {report.votes:,} votes, {s.models} models {s.gap:g} rating points apart, "
        f"{s.days} days, seed {s.seed}"
    )
    print()
    per_kind = ", ".join(
        f"{report.voters[k]} {k} ({s.bad_votes[k]} votes each)" for k in s.bad if s.bad[k]
    )
    print(
        f"Bad voters: {per_kind}, within the first {s.bad_days} days; the riggers share "
        f"{s.rigger_ips} addresses. Target: model-{s.target:02d}, rank {report.honest_rank} "
        "on the honest votes alone."
    )
    print()
    print("Voters flagged by the anomaly test, among those tested:")
    print()
    present = [k for k in VOTER_KINDS if report.voters[k]]
    print("| pipeline | " + " | ".join(f"{k} ({report.tested[k]})" for k in present) + " |")
    print("| --- |" + " ---: |" * len(present))
    for o in report.outcomes:
        cells = [f"{report.rate(o.label, k):.1%}" for k in present]
        print(f"| {o.label} | " + " | ".join(cells) + " |")
    print()
    print("The target, and what each pipeline removed:")
    print()
    print("| pipeline | rank | places gained | rating gained | counted | removed by stage |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for o in report.outcomes:
        removed = ", ".join(f"{k} {v:,}" for k, v in o.removed.items() if v)
        print(
            f"| {o.label} | {o.target_rank} | {report.places(o.label):+d} "
            f"| {report.gain(o.label):+.1f} | {o.counted:,} | {removed or '-'} |"
        )
    print()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated arenas")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for name in args.scenario or list(SCENARIOS):
        print_report(evaluate(replace(SCENARIOS[name], seed=args.seed)))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
