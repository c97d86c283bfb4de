"""RatingOptions: defaults, validation naming the field, and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from ratings import RatingOptions

NON_DEFAULT: dict[str, Any] = {
    "ties": "davidson",
    "prior": 2.5,
    "penalty": 0.0,
    "position": False,
    "reweight": True,
    "ci": "bootstrap",
    "rounds": 250,
    "seed": 12345,
    "level": 0.9,
    "center": 1500.0,
}


def test_defaults() -> None:
    o = RatingOptions()
    assert (o.ties, o.prior, o.penalty, o.position, o.reweight) == ("half", 1.0, 0.5, True, False)
    assert (o.ci, o.rounds, o.seed, o.level, o.center) == ("sandwich", 1000, 0, 0.95, 1000.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.seed = 1  # type: ignore[misc]


def test_every_field_round_trips_through_json() -> None:
    names = {f.name for f in dataclasses.fields(RatingOptions)}
    assert set(NON_DEFAULT) == names  # the table above covers every field
    for options in (RatingOptions(), RatingOptions(**NON_DEFAULT)):
        d = options.to_dict()
        assert set(d) == names
        assert all(type(v) in (str, float, int, bool) for v in d.values())
        back = json.loads(json.dumps(d))
        assert back == d
        assert RatingOptions.from_dict(back) == options
        assert RatingOptions.from_dict(d) == options
    assert RatingOptions(**NON_DEFAULT).to_dict() == NON_DEFAULT


def test_numbers_are_stored_as_plain_python_types() -> None:
    o = RatingOptions(
        prior=2,
        center=np.float64(900.0),
        rounds=np.int64(10),  # type: ignore[arg-type]
        seed=np.int32(4),  # type: ignore[arg-type]
    )
    d = o.to_dict()
    assert type(d["prior"]) is float and d["prior"] == 2.0
    assert type(d["center"]) is float and type(d["rounds"]) is int and type(d["seed"]) is int
    assert o == RatingOptions(prior=2.0, center=900.0, rounds=10, seed=4)
    # A missing key takes its default.
    assert RatingOptions.from_dict({"seed": 3}) == RatingOptions(seed=3)
    assert RatingOptions.from_dict({}) == RatingOptions()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ties": "bradley"}, "ties"),
        ({"ci": "fisher"}, "ci"),
        ({"ties": "davidson"}, "position"),  # the position term needs ties as half
        ({"prior": 0.0}, "prior"),  # position needs a prior
        ({"prior": -1.0, "position": False}, "prior"),
        ({"penalty": -0.1}, "penalty"),
        ({"level": 0.0}, "level"),
        ({"level": 1.0}, "level"),
        ({"level": 95.0}, "level"),
        ({"ci": "bootstrap", "rounds": 1}, "rounds"),
        ({"rounds": -5}, "rounds"),
        ({"seed": -1}, "seed"),
        ({"center": float("nan")}, "center"),
        ({"prior": float("inf")}, "prior"),
        ({"position": 1}, "position"),
        ({"reweight": "yes"}, "reweight"),
        ({"rounds": 10.0}, "rounds"),
        ({"seed": True}, "seed"),
        ({"level": True}, "level"),
        ({"ties": None}, "ties"),
    ],
)
def test_invalid_options_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RatingOptions(**changes)
    with pytest.raises(ValueError, match=field):
        RatingOptions.from_dict({**RatingOptions().to_dict(), **changes})


def test_valid_combinations() -> None:
    # Other tie models and no prior are fine once the position term is off.
    assert RatingOptions(ties="rao-kupper", position=False, prior=0.0).prior == 0.0
    # rounds is only constrained for the bootstrap.
    assert RatingOptions(rounds=0).rounds == 0
    assert RatingOptions(ci="bootstrap", rounds=2).rounds == 2


def test_from_dict_rejects_unknown_keys_and_non_mappings() -> None:
    with pytest.raises(ValueError, match="anchor"):
        RatingOptions.from_dict({"anchor": 3})
    with pytest.raises(ValueError, match="ci_level"):
        RatingOptions.from_dict({**RatingOptions().to_dict(), "ci_level": 0.9})
    with pytest.raises(ValueError, match="mapping"):
        RatingOptions.from_dict([("seed", 1)])  # type: ignore[arg-type]
