"""Shared fixtures for the ratings tests: the real Chatbot Arena votes in tests/data."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ratings import PairCounts, pair_counts

DATA = Path(__file__).resolve().parent.parent / "data"
PAIR_COUNTS = DATA / "chatbotarena_20240814_pair_counts.json"
PUBLISHED = DATA / "published_bt_20240813.csv"
# tests/data/SOURCES.md: the same model under two names.
RENAMED = {"chatgpt-4o-latest": "chatgpt-4o-latest-2024-08-08"}


@dataclass(frozen=True)
class RealVotes:
    models: list[str]
    pc: PairCounts
    published: dict[str, dict[str, float]]

    def published_name(self, model: str) -> str:
        return RENAMED.get(model, model)


@pytest.fixture(scope="session")
def real_votes() -> RealVotes:
    raw = json.loads(PAIR_COUNTS.read_text())
    x = np.asarray(raw["X"])
    pc = pair_counts(x[:, 0], x[:, 1], raw["Y"], len(raw["models"]))
    with PUBLISHED.open(newline="") as fh:
        published = {
            row["model"]: {k: float(v) for k, v in row.items() if k != "model"}
            for row in csv.DictReader(fh)
        }
    return RealVotes(list(raw["models"]), pc, published)
