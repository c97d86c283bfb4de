"""The options of one leaderboard computation, as one value a snapshot can record whole.

`RatingOptions` is what `rate_arena` takes. It validates itself on construction, so an invalid
combination fails where it is made, with a `ValueError` that names the field; `to_dict` and
`from_dict` give it a JSON form (plain types only) that round-trips exactly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .bt import TIE_MODELS

CI_METHODS: tuple[str, ...] = ("sandwich", "bootstrap")

# The JSON type of each field: what from_dict accepts and to_dict writes.
_KINDS: dict[str, type] = {
    "ties": str,
    "prior": float,
    "penalty": float,
    "position": bool,
    "reweight": bool,
    "ci": str,
    "rounds": int,
    "seed": int,
    "level": float,
    "center": float,
}


def _coerce(name: str, value: Any, kind: type) -> Any:
    """`value` as a plain Python `kind`, or a ValueError naming the field.

    bool is never taken for a number (True is an int in Python), nor a number for a bool; an integer
    is fine for a float field. numpy scalars are accepted and converted to Python types.
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out = float(value)
            if not math.isfinite(out):
                raise ValueError(f"{name} must be finite, got {value!r}")
            return out
    elif isinstance(value, str):
        return value
    raise ValueError(f"{name} must be {kind.__name__}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class RatingOptions:
    """Options of a leaderboard computation (see docs/ratings.md, "Options").

    - `ties`: "half", "davidson" or "rao-kupper" (`ratings.bt`). The position term and style control
      need "half".
    - `prior`: virtual tied battles per model against a reference player (> 0 with position or
      style; 0 is the plain MLE).
    - `penalty`: L2 penalty penalty / 2 * coef^2 on each style coefficient and on the position term.
    - `position`: fit the left-side term gamma (log-odds that model_a, shown on the left, gains).
    - `reweight`: weight each battle by 1 / max(battles of its pair, 50).
    - `ci`: "sandwich" or "bootstrap"; `rounds` bootstrap rounds (>= 2 for the bootstrap).
    - `seed`: the seed the caller gives `np.random.default_rng` for the bootstrap, recorded so that
      a snapshot can be recomputed exactly.
    - `level`: interval level in (0, 1); `center`: the mean rating of the rated models.
    """

    ties: str = "half"
    prior: float = 1.0
    penalty: float = 0.5
    position: bool = True
    reweight: bool = False
    ci: str = "sandwich"
    rounds: int = 1000
    seed: int = 0
    level: float = 0.95
    center: float = 1000.0

    def __post_init__(self) -> None:
        for name, kind in _KINDS.items():
            object.__setattr__(self, name, _coerce(name, getattr(self, name), kind))
        if self.ties not in TIE_MODELS:
            raise ValueError(f"ties must be one of {TIE_MODELS}, got {self.ties!r}")
        if self.ci not in CI_METHODS:
            raise ValueError(f"ci must be one of {CI_METHODS}, got {self.ci!r}")
        if self.prior < 0:
            raise ValueError(f"prior must be non-negative, got {self.prior}")
        if self.penalty < 0:
            raise ValueError(f"penalty must be non-negative, got {self.penalty}")
        if self.position:
            if self.ties != "half":
                raise ValueError(
                    f"position=True needs ties='half' (got ties={self.ties!r}); "
                    "set position=False to use another tie model"
                )
            if self.prior <= 0:
                raise ValueError("prior must be > 0 when position=True")
        if self.rounds < 0:
            raise ValueError(f"rounds must be non-negative, got {self.rounds}")
        if self.ci == "bootstrap" and self.rounds < 2:
            raise ValueError(f"rounds must be at least 2 for ci='bootstrap', got {self.rounds}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie strictly between 0 and 1, got {self.level}")

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON types (str, float, bool, int)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RatingOptions:
        """Options from `to_dict`'s form. Unknown keys and wrong types are a ValueError naming the
        key; a missing key takes its default."""
        if not isinstance(data, Mapping):
            raise ValueError(f"rating options must be a mapping, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _KINDS)
        if unknown:
            raise ValueError(f"unknown rating option(s): {', '.join(unknown)}")
        values = {name: _coerce(name, value, _KINDS[name]) for name, value in data.items()}
        return cls(**values)
