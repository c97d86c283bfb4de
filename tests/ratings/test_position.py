"""The position (left-side) term and `rate_arena`: derivatives, recovery, equivalences, edges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from ratings import (
    A_WINS,
    B_WINS,
    ELO_PER_UNIT,
    RatingOptions,
    StyleFit,
    bootstrap_style,
    bt_style,
    group_battles,
    rank_lower_bound,
    rank_upper_bound,
    rate_arena,
    rate_battles,
    rate_pairs,
    sandwich_style,
    style_data,
    style_features,
    style_hessian,
    style_loglik,
    style_score,
)
from ratings.simulate import random_pairs, simulate_battles, simulate_style_battles
from ratings.style import sides_confounded

BETA = np.array([0.8, 0.3, 0.2, 0.1])


def sided(seed: int, gamma: float, n: int = 8, m: int = 20_000):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.6, n)
    return theta, *simulate_battles(theta, m, rng, 0.3, position=gamma)


def swap(a: np.ndarray, b: np.ndarray, o: np.ndarray):
    """The same battles with the sides exchanged."""
    return b, a, np.where(o == A_WINS, B_WINS, np.where(o == B_WINS, A_WINS, o))


def no_style(m: int) -> np.ndarray:
    return np.zeros((m, 0))


def test_style_data_appends_a_constant_column_exempt_from_the_drop() -> None:
    _, a, b, o = sided(0, 0.0, m=500)
    data = style_data(a, b, o, no_style(a.size), 8, position=True)
    assert data.position and data.n_coef == 1
    np.testing.assert_array_equal(data.xt, np.ones((1, a.size)))
    np.testing.assert_array_equal(data.dropped, [False])
    # Beside a zero-variance style column: that one is dropped, the constant one is kept.
    x = np.column_stack([np.linspace(-1, 1, a.size), np.zeros(a.size)])
    with pytest.warns(UserWarning, match=r"column\(s\) \[1\]"):
        both = style_data(a, b, o, x, 8, position=True)
    np.testing.assert_array_equal(both.dropped, [False, True, False])
    np.testing.assert_array_equal(both.xt, np.vstack([x[:, 0], np.ones(a.size)]))
    # Off, nothing changes.
    off = style_data(a, b, o, x[:, :1], 8)
    assert not off.position
    np.testing.assert_array_equal(off.xt, x[:, :1].T)
    # Only without battles is the constant uninformative; it is then dropped without a warning.
    none = np.array([], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = style_data(none, none, none, no_style(0), 3, position=True)
    np.testing.assert_array_equal(empty.dropped, [True])
    assert empty.n_coef == 0


def test_sides_confounded_agrees_with_least_squares() -> None:
    """Confounded means the constant column lies in the span of the strength columns."""
    rng = np.random.default_rng(15)
    seen = set()
    for _ in range(300):
        n = int(rng.integers(2, 7))
        m = int(rng.integers(1, 9))
        a, b = random_pairs(n, m, rng)
        design = np.zeros((m, n))
        design[np.arange(m), a] = 1.0
        design[np.arange(m), b] = -1.0
        v = np.linalg.lstsq(design, np.ones(m), rcond=None)[0]
        expected = bool(np.allclose(design @ v, 1.0, atol=1e-9))
        assert sides_confounded(a, b, n) == expected, (a, b)
        seen.add(expected)
    assert seen == {False, True}
    # A path played always the same way round; then one battle the other way round.
    assert sides_confounded(np.array([0, 1, 2, 0]), np.array([1, 2, 3, 1]), 4)
    assert not sides_confounded(np.array([0, 1, 2, 1]), np.array([1, 2, 3, 0]), 4)
    # Cycles: v = (2, 1, 0, 1) fits 0>1, 1>2, 3>2, 0>3; no v fits a triangle 0>1, 1>2, 0>2.
    assert sides_confounded(np.array([0, 1, 3, 0]), np.array([1, 2, 2, 3]), 4)
    assert not sides_confounded(np.array([0, 1, 0]), np.array([1, 2, 2]), 3)


def test_confounded_sides_leave_the_position_term_out() -> None:
    """A path of models, each pair always played the same way round: the side bias and the
    strengths cannot be told apart, so gamma is NaN and the board is the plain one."""
    rng = np.random.default_rng(16)
    a, b = np.repeat([0, 1, 2], 200), np.repeat([1, 2, 3], 200)
    a, b, o = simulate_battles(rng.normal(0, 0.6, 4), 0, rng, model_a=a, model_b=b, position=0.3)
    with pytest.warns(UserWarning, match="confounded"):
        board = rate_arena(a, b, o, 4)
    plain = rate_arena(a, b, o, 4, options=RatingOptions(position=False))
    assert board.position_coef is not None and np.isnan(board.position_coef)
    assert board.position_upper is not None and np.isnan(board.position_upper)
    np.testing.assert_allclose(board.rating, plain.rating, atol=1e-9)
    np.testing.assert_allclose(board.upper, plain.upper, atol=1e-9)
    # Once the sides vary, gamma is estimated again, without a warning.
    a2, b2, o2 = swap(a[:50], b[:50], o[:50])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a3, b3, o3 = (np.concatenate(pair) for pair in ((a, a2), (b, b2), (o, o2)))
        mixed = rate_arena(a3, b3, o3, 4)
    assert mixed.position_coef is not None and np.isfinite(mixed.position_coef)


@pytest.mark.parametrize("weighted", [False, True])
def test_grouping_battles_without_covariates_is_exact(weighted: bool) -> None:
    """Rows (model_a, model_b, score, weight) with counts give the battles' fit and sandwich."""
    _, a, b, o = sided(18, 0.3, n=6, m=3000)
    w = np.where(np.arange(a.size) % 3 == 0, 2.0, 0.5) if weighted else None
    raw = style_data(a, b, o, no_style(a.size), 6, w, position=True)
    grouped = style_data(a, b, o, no_style(a.size), 6, w, position=True, group=True)
    assert grouped.count is not None and raw.count is None
    assert grouped.a.size < a.size / 10
    assert grouped.n_battles == raw.n_battles == a.size
    assert grouped.row_weight.sum() == pytest.approx(raw.weight.sum())
    fit_raw, fit_grouped = bt_style(raw), bt_style(grouped)
    np.testing.assert_allclose(fit_grouped.theta, fit_raw.theta, atol=1e-10)
    np.testing.assert_allclose(fit_grouped.coef, fit_raw.coef, atol=1e-10)
    assert fit_grouped.loglik == pytest.approx(fit_raw.loglik, rel=1e-12)
    np.testing.assert_allclose(
        sandwich_style(grouped, fit_grouped), sandwich_style(raw, fit_raw), rtol=1e-8, atol=1e-14
    )
    p = np.random.default_rng(18).normal(0.0, 0.5, 7)
    np.testing.assert_allclose(style_score(p, grouped), style_score(p, raw), atol=1e-9)
    np.testing.assert_allclose(style_hessian(p, grouped), style_hessian(p, raw), atol=1e-9)
    with pytest.raises(ValueError, match="group"):
        style_data(a, b, o, np.ones((a.size, 1)), 6, position=True, group=True)


def test_bootstrap_of_grouped_rows_equals_the_bootstrap_of_battles() -> None:
    _, a, b, o = sided(19, 0.3, n=4, m=600)
    raw = style_data(a, b, o, no_style(a.size), 4, position=True)
    grouped = style_data(a, b, o, no_style(a.size), 4, position=True, group=True)
    rounds = 1500
    one = bootstrap_style(raw, rounds, np.random.default_rng(2))
    two = bootstrap_style(grouped, rounds, np.random.default_rng(3))
    again = bootstrap_style(grouped, 20, np.random.default_rng(3), workers=1)
    np.testing.assert_array_equal(again, two[:20])  # reproducible whatever the threads
    # The same distribution of refits: contrasts of strengths and gamma (the last column).
    columns = [one[:, k] - one[:, 0] for k in (1, 2, 3)] + [one[:, -1]]
    others = [two[:, k] - two[:, 0] for k in (1, 2, 3)] + [two[:, -1]]
    for x, y in zip(columns, others, strict=True):
        assert stats.ks_2samp(x, y).pvalue > 1e-3
        assert np.std(y) == pytest.approx(np.std(x), rel=0.08)


@pytest.mark.parametrize("with_style", [False, True])
def test_score_and_hessian_with_the_position_column_match_finite_differences(
    with_style: bool,
) -> None:
    rng = np.random.default_rng(1)
    theta = rng.normal(0.0, 0.6, 5)
    a, b, o, sa, sb = simulate_style_battles(theta, BETA, 300, rng, position=0.4)
    x = style_features(sa, sb) if with_style else no_style(a.size)
    w = rng.uniform(0.5, 2.0, a.size)
    data = style_data(a, b, o, x, 5, w, position=True)
    assert data.n_coef == (5 if with_style else 1)
    p = rng.normal(0.0, 0.5, 5 + data.n_coef)
    prior, penalty, eps = 0.8, 0.7, 1e-6
    eye = np.eye(p.size)
    fd_grad = np.array(
        [
            (
                style_loglik(p + eps * e, data, prior, penalty)
                - style_loglik(p - eps * e, data, prior, penalty)
            )
            / (2 * eps)
            for e in eye
        ]
    )
    fd_hess = np.array(
        [
            (
                style_score(p + eps * e, data, prior, penalty)
                - style_score(p - eps * e, data, prior, penalty)
            )
            / (2 * eps)
            for e in eye
        ]
    )
    g, h = style_score(p, data, prior, penalty), style_hessian(p, data, prior, penalty)
    assert np.abs(fd_grad - g).max() < 1e-6 * np.abs(g).max()
    assert np.abs(fd_hess - h).max() < 1e-6 * np.abs(h).max()
    assert np.linalg.eigvalsh(h).max() < 0
    # The penalty acts on the position coefficient like on the others.
    assert style_loglik(p, data, prior, penalty) == pytest.approx(
        style_loglik(p, data, prior, 0.0) - 0.5 * penalty * float(p[5:] @ p[5:])
    )


@pytest.mark.parametrize(("seed", "gamma"), [(2, 0.3), (3, -0.2)])
def test_the_fit_recovers_a_known_side_bias(seed: int, gamma: float) -> None:
    theta, a, b, o = sided(seed, gamma)
    board = rate_arena(a, b, o, 8)
    assert board.position_coef is not None
    assert board.position_lower is not None and board.position_upper is not None
    assert board.position_lower < gamma < board.position_upper
    half = (board.position_upper - board.position_lower) / 2
    assert 0.005 < half < 0.05
    assert abs(board.position_coef - gamma) < half
    centred = (board.rating - board.rating.mean()) / ELO_PER_UNIT
    assert np.abs(centred - (theta - theta.mean())).max() < 0.08
    assert board.coef is None and board.coef_lower is None  # no style covariates
    # Ignoring the bias (sides are random) leaves ratings unbiased but gamma's signal unexplained:
    # the fit with the term has the higher penalized likelihood by a clear margin.
    plain = rate_arena(a, b, o, 8, options=RatingOptions(position=False))
    assert plain.position_coef is None and plain.position_lower is None
    assert isinstance(board.fit, StyleFit)
    assert board.fit.loglik - plain.fit.loglik > 10.0


def test_position_and_style_together_recover_both() -> None:
    rng = np.random.default_rng(4)
    theta = rng.normal(0.0, 0.6, 8)
    gamma = 0.25
    a, b, o, sa, sb = simulate_style_battles(theta, BETA, 60_000, rng, 0.3, position=gamma)
    board = rate_arena(a, b, o, 8, style_a=sa, style_b=sb)
    assert board.coef is not None and board.coef.shape == (4,)
    assert board.coef_lower is not None and board.coef_upper is not None
    assert board.coef_lower.shape == board.coef_upper.shape == (4,)
    truth = BETA * ((sa - sb) / (sa + sb + 1.0)).std(axis=0)
    np.testing.assert_allclose(board.coef, truth, atol=0.03)
    assert board.position_coef is not None
    assert board.position_lower is not None and board.position_upper is not None
    assert board.position_lower < gamma < board.position_upper
    fit = board.fit
    assert isinstance(fit, StyleFit) and fit.position
    np.testing.assert_array_equal(fit.style_coef, board.coef)
    assert fit.position_coef == board.position_coef
    # The style-only fit (position off) has no position fields and the same coefficient layout.
    off = rate_arena(a, b, o, 8, options=RatingOptions(position=False), style_a=sa, style_b=sb)
    assert off.position_coef is None and off.coef is not None and off.coef.shape == (4,)


def test_position_off_reproduces_rate_battles_and_rate_pairs_exactly() -> None:
    _, a, b, o = sided(5, 0.2, m=5000)
    off = RatingOptions(position=False)
    board = rate_arena(a, b, o, 8, options=off)
    again = rate_battles(a, b, o, 8)
    pairs = rate_pairs(group_battles(a, b, o, 8))
    for other in (again, pairs):
        for name in ("rating", "lower", "upper", "rank_ub", "rank_lb", "battles"):
            np.testing.assert_array_equal(getattr(board, name), getattr(other, name))
    # Other options are passed through: bootstrap with a seed, a tie model, reweighting, centre.
    opts = RatingOptions(
        position=False, ci="bootstrap", rounds=50, seed=7, ties="davidson", reweight=True, center=0
    )
    boot = rate_arena(a, b, o, 8, options=opts, rng=np.random.default_rng(opts.seed))
    ref = rate_battles(
        a,
        b,
        o,
        8,
        ci="bootstrap",
        rounds=50,
        rng=np.random.default_rng(7),
        ties="davidson",
        reweight=True,
        center=0.0,
    )
    assert boot.samples is not None and ref.samples is not None
    np.testing.assert_array_equal(boot.samples, ref.samples)
    np.testing.assert_array_equal(boot.rating, ref.rating)
    assert np.nanmean(boot.rating) == pytest.approx(0.0, abs=1e-9)
    # With style counts, position off is rate_battles' style control.
    rng = np.random.default_rng(5)
    a, b, o, sa, sb = simulate_style_battles(rng.normal(0, 0.6, 8), BETA, 5000, rng)
    styled = rate_arena(a, b, o, 8, options=off, style_a=sa, style_b=sb)
    ref = rate_battles(a, b, o, 8, style_a=sa, style_b=sb)
    assert styled.coef is not None and ref.coef is not None
    np.testing.assert_array_equal(styled.rating, ref.rating)
    np.testing.assert_array_equal(styled.upper, ref.upper)
    np.testing.assert_array_equal(styled.coef, ref.coef)


def test_without_a_side_bias_the_position_term_changes_little() -> None:
    _, a, b, o = sided(6, 0.0)
    on = rate_arena(a, b, o, 8)
    off = rate_arena(a, b, o, 8, options=RatingOptions(position=False))
    assert on.position_lower is not None and on.position_upper is not None
    assert on.position_lower < 0.0 < on.position_upper
    half_off = (off.upper - off.lower) / 2
    # Far inside the intervals: a few percent of a half-width.
    assert np.abs(on.rating - off.rating).max() < 0.05 * half_off.min()
    np.testing.assert_allclose((on.upper - on.lower) / 2 / half_off, 1.0, atol=0.02)
    np.testing.assert_array_equal(on.rank_ub, off.rank_ub)


def test_ignoring_a_side_bias_shrinks_the_rating_spread() -> None:
    """With random sides an unmodelled bias averages sigma(d + gamma) and sigma(d - gamma), which is
    flatter than sigma(d): the plain fit pulls the ratings together, the position fit does not."""
    rng = np.random.default_rng(17)
    theta = rng.normal(0.0, 0.6, 8)
    a, b, o = simulate_battles(theta, 100_000, rng, 0.3, position=0.6)
    on = rate_arena(a, b, o, 8)
    off = rate_arena(a, b, o, 8, options=RatingOptions(position=False))
    truth = (theta - theta.mean()) * ELO_PER_UNIT
    assert np.polyfit(on.rating, off.rating, 1)[0] < 0.95
    assert np.polyfit(truth, on.rating, 1)[0] == pytest.approx(1.0, abs=0.03)


def test_a_model_always_on_the_left_is_overrated_without_the_term() -> None:
    """The case the term is for: when one model's sides are not balanced, the plain fit credits
    it with the side bias; the position fit does not."""
    rng = np.random.default_rng(14)
    theta, gamma = rng.normal(0.0, 0.6, 6), 0.3
    a, b = random_pairs(6, 30_000, rng)
    left = b == 0  # model 0 always shown as model_a
    a, b = np.where(left, b, a), np.where(left, a, b)
    a, b, o = simulate_battles(theta, 0, rng, 0.3, model_a=a, model_b=b, position=gamma)
    truth = theta - theta.mean()
    errors = {}
    for position in (False, True):
        board = rate_arena(a, b, o, 6, options=RatingOptions(position=position))
        errors[position] = (board.rating - board.rating.mean()) / ELO_PER_UNIT - truth
        half = (board.upper - board.lower)[0] / 2 / ELO_PER_UNIT
        covered = abs(errors[position][0]) < half
        assert covered == position  # only the position fit's interval covers model 0's truth
    # Model 0 takes most of gamma (the rest is spread over the others by the centring).
    assert errors[False][0] > 0.6 * gamma
    assert np.abs(errors[True]).max() < 0.05


def test_swapping_sides_flips_gamma_and_keeps_the_ratings() -> None:
    _, a, b, o = sided(7, 0.3, m=5000)
    base = rate_arena(a, b, o, 8)
    a2, b2, o2 = swap(a, b, o)
    swapped = rate_arena(a2, b2, o2, 8)
    assert base.position_coef is not None and swapped.position_coef is not None
    assert swapped.position_coef == pytest.approx(-base.position_coef, abs=1e-9)
    assert base.position_lower is not None and swapped.position_upper is not None
    assert swapped.position_upper == pytest.approx(-base.position_lower, abs=1e-9)
    np.testing.assert_allclose(swapped.rating, base.rating, atol=1e-7)
    np.testing.assert_allclose(swapped.upper, base.upper, atol=1e-7)
    order = np.random.default_rng(7).permutation(a.size)
    shuffled = rate_arena(a[order], b[order], o[order], 8)
    np.testing.assert_allclose(shuffled.rating, base.rating, atol=1e-7)
    assert shuffled.position_coef == pytest.approx(base.position_coef, abs=1e-9)


def test_bootstrap_and_sandwich_intervals_of_gamma_agree() -> None:
    _, a, b, o = sided(8, 0.3)
    sandwich = rate_arena(a, b, o, 8)
    opts = RatingOptions(ci="bootstrap", rounds=300, seed=3)
    boot = rate_arena(a, b, o, 8, options=opts, rng=np.random.default_rng(opts.seed))
    again = rate_arena(a, b, o, 8, options=opts, rng=np.random.default_rng(opts.seed))
    assert boot.position_coef == sandwich.position_coef
    assert boot.position_lower == again.position_lower  # reproducible from the seed
    widths = []
    for board in (sandwich, boot):
        assert board.position_lower is not None and board.position_upper is not None
        widths.append(board.position_upper - board.position_lower)
    assert widths[1] / widths[0] == pytest.approx(1.0, abs=0.2)
    np.testing.assert_allclose(
        (boot.upper - boot.lower) / (sandwich.upper - sandwich.lower), 1, 0.2
    )
    # The position variance is the last diagonal entry of the sandwich of the style fit.
    data = style_data(a, b, o, no_style(a.size), 8, position=True)
    fit = bt_style(data)
    sd = np.sqrt(sandwich_style(data, fit)[-1, -1])
    assert widths[0] == pytest.approx(2 * 1.959964 * sd, rel=1e-6)


@pytest.mark.parametrize(
    ("options", "with_style"),
    [
        (RatingOptions(), False),
        (RatingOptions(), True),
        (RatingOptions(position=False), False),
        (RatingOptions(position=False), True),
        (RatingOptions(position=False, ties="davidson"), False),
        (RatingOptions(position=False, ties="rao-kupper", ci="bootstrap", rounds=5), False),
        (RatingOptions(ci="bootstrap", rounds=5), False),
        (RatingOptions(ci="bootstrap", rounds=5), True),
        (RatingOptions(reweight=True), True),
    ],
)
def test_no_battles_give_an_unrated_board(options: RatingOptions, with_style: bool) -> None:
    none = np.array([], dtype=np.int64)
    style = np.zeros((0, 4)) if with_style else None
    with warnings.catch_warnings():
        # Style columns without battles have no variance and say so; nothing else may warn.
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "style covariate column")
        board = rate_arena(
            none,
            none,
            none,
            3,
            options=options,
            style_a=style,
            style_b=style,
            rng=np.random.default_rng(options.seed),
        )
    assert np.all(np.isnan(board.rating)) and np.all(np.isnan(board.lower))
    assert np.all(np.isnan(board.upper))
    np.testing.assert_array_equal(board.rank_ub, 0)
    np.testing.assert_array_equal(board.rank_lb, 0)
    np.testing.assert_array_equal(board.battles, 0)
    if options.position:
        assert board.position_coef is not None and np.isnan(board.position_coef)
        assert board.position_lower is not None and np.isnan(board.position_lower)
    else:
        assert board.position_coef is None


def test_models_without_battles_and_disconnected_groups() -> None:
    _, a, b, o = sided(9, 0.2, n=4, m=3000)
    board = rate_arena(a, b, o, 6)
    assert np.all(np.isnan(board.rating[4:])) and np.all(np.isfinite(board.rating[:4]))
    np.testing.assert_array_equal(board.rank_ub[4:], 0)
    np.testing.assert_array_equal(board.rank_lb[4:], 0)
    assert np.nanmean(board.rating) == pytest.approx(1000.0)
    with pytest.warns(UserWarning, match="never played each other"):
        rate_arena(np.concatenate([a, a + 4]), np.concatenate([b, b + 4]), np.tile(o, 2), 8)


def test_rank_bounds_of_a_position_board() -> None:
    _, a, b, o = sided(10, 0.2, n=12, m=3000)
    board = rate_arena(a, b, o, 12)
    np.testing.assert_array_equal(board.rank_ub, rank_upper_bound(board.lower, board.upper))
    np.testing.assert_array_equal(board.rank_lb, rank_lower_bound(board.lower, board.upper))
    assert np.all(board.rank_ub <= board.rank_lb)
    assert np.any(board.rank_ub < board.rank_lb)


def test_rate_arena_option_errors() -> None:
    _, a, b, o = sided(11, 0.0, m=500)
    with pytest.raises(ValueError, match="rng"):
        rate_arena(a, b, o, 8, options=RatingOptions(ci="bootstrap"))
    with pytest.raises(TypeError, match="RatingOptions"):
        rate_arena(a, b, o, 8, options={"ci": "sandwich"})  # type: ignore[arg-type]
    style = np.ones((a.size, 4))
    with pytest.raises(ValueError, match="half"):
        rate_arena(
            a,
            b,
            o,
            8,
            options=RatingOptions(position=False, ties="davidson"),
            style_a=style,
            style_b=style,
        )
    with pytest.raises(ValueError, match="prior > 0"):
        rate_arena(
            a, b, o, 8, options=RatingOptions(position=False, prior=0), style_a=style, style_b=style
        )
    with pytest.raises(ValueError, match="both style_a and style_b"):
        rate_arena(a, b, o, 8, style_a=style)
    with pytest.raises(ValueError, match="half"):
        rate_battles(a, b, o, 8, position=True, ties="rao-kupper")


@pytest.mark.slow
def test_position_intervals_cover_the_true_side_bias() -> None:
    """400 data sets with a known side bias: the 95% sandwich and bootstrap intervals of gamma
    cover it 92-98% of the time (the binomial sd of a 95% rate over 400 sets is 1.1%)."""
    rng = np.random.default_rng(12)
    gamma = 0.2
    hits = {"sandwich": 0, "bootstrap": 0}
    n_sets = 400
    for _ in range(n_sets):
        theta = rng.normal(0.0, 0.6, 6)
        a, b, o = simulate_battles(theta, 3000, rng, 0.3, position=gamma)
        for ci in hits:
            opts = RatingOptions(ci=ci, rounds=200)
            board = rate_arena(a, b, o, 6, options=opts, rng=rng)
            assert board.position_lower is not None and board.position_upper is not None
            hits[ci] += board.position_lower <= gamma <= board.position_upper
    for ci, k in hits.items():
        assert 0.92 <= k / n_sets <= 0.98, (ci, k / n_sets)
