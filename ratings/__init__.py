"""Arena ratings: Bradley–Terry with honest intervals, online Elo and style control.

Pure numerics over numpy arrays; no I/O outside the command line (`python -m ratings`). See
docs/ratings.md for the model, the estimators and the conventions.
"""

from .battles import (
    A_WINS,
    B_WINS,
    BOTH_BAD,
    TIE,
    WINNER_CODES,
    PairCounts,
    battle_count_matrix,
    battles_as_rows,
    group_battles,
    inverse_pair_weights,
    model_win_rates,
    pair_counts,
    reweight_pair_counts,
    win_rate_matrix,
)
from .bt import BTFit, bt_hessian, bt_loglik, bt_pairwise, bt_score
from .elo import elo_online
from .leaderboard import (
    ELO_PER_UNIT,
    Leaderboard,
    normal_intervals,
    percentile_intervals,
    predicted_win_rate_matrix,
    rank_lower_bound,
    rank_upper_bound,
    rate_arena,
    rate_battles,
    rate_pairs,
    to_elo,
)
from .options import RatingOptions
from .sampling import Multinomial, PoissonTable, multinomial_counts
from .style import (
    StyleData,
    StyleFit,
    bootstrap_style,
    bt_style,
    sandwich_style,
    style_data,
    style_features,
    style_hessian,
    style_loglik,
    style_score,
)
from .uncertainty import bootstrap_pairwise, fisher_pairwise, sandwich_pairwise

__all__ = [
    "A_WINS",
    "BOTH_BAD",
    "B_WINS",
    "ELO_PER_UNIT",
    "TIE",
    "WINNER_CODES",
    "BTFit",
    "Leaderboard",
    "Multinomial",
    "PairCounts",
    "PoissonTable",
    "RatingOptions",
    "StyleData",
    "StyleFit",
    "battle_count_matrix",
    "battles_as_rows",
    "bootstrap_pairwise",
    "bootstrap_style",
    "bt_hessian",
    "bt_loglik",
    "bt_pairwise",
    "bt_score",
    "bt_style",
    "elo_online",
    "fisher_pairwise",
    "group_battles",
    "inverse_pair_weights",
    "model_win_rates",
    "multinomial_counts",
    "normal_intervals",
    "pair_counts",
    "percentile_intervals",
    "predicted_win_rate_matrix",
    "rank_lower_bound",
    "rank_upper_bound",
    "rate_arena",
    "rate_battles",
    "rate_pairs",
    "reweight_pair_counts",
    "sandwich_pairwise",
    "sandwich_style",
    "style_data",
    "style_features",
    "style_hessian",
    "style_loglik",
    "style_score",
    "to_elo",
    "win_rate_matrix",
]
