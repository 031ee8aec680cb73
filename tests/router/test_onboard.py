"""The low-rank (IRT) model that places a new expert from a small profile."""

from __future__ import annotations

import numpy as np
import pytest

from router.onboard import (
    IrtTable,
    impute_outcomes,
    impute_reply_costs,
    impute_twin,
    onboard_profile,
    onboard_reply_costs,
    select_profile,
)


def _table(rng: np.random.Generator, k: int = 40, m: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A `(k, m)` accuracy table of exact rank-1 structure, and its region factor."""
    difficulty, ability = rng.normal(0, 1, k), rng.normal(0, 0.8, m)
    factor, loadings = rng.normal(0, 1, k), rng.normal(0, 1, m)
    z = difficulty[:, None] + ability[None, :] + np.outer(factor, loadings)
    return 1 / (1 + np.exp(-z)), factor


def test_the_decomposition_reproduces_a_low_rank_table() -> None:
    table, _ = _table(np.random.default_rng(0))
    irt = IrtTable(table, rank=1)
    for j in range(table.shape[1]):
        theta = np.concatenate([[irt.ability[j]], irt.loadings[j]])
        assert irt.predict(theta) == pytest.approx(table[:, j], abs=1e-6)


def test_many_outcomes_recover_a_new_experts_profile() -> None:
    rng = np.random.default_rng(1)
    table, factor = _table(rng)
    truth = 1 / (1 + np.exp(-(np.log(table / (1 - table)).mean(axis=1) + 0.7 - 1.5 * factor)))
    regions = rng.integers(0, len(table), 20_000)
    weights = np.eye(len(table))[regions]
    outcomes = (rng.random(len(regions)) < truth[regions]).astype(float)
    got = onboard_profile(table, weights, outcomes, rank=1, strength=1.0)
    assert np.abs(got - truth).max() < 0.05


def test_a_strong_prior_keeps_the_shape_of_the_existing_experts_and_shifts_it() -> None:
    # rank 0 (or a huge strength): regions keep their order of difficulty whatever 100
    # outcomes say; only the level moves with the newcomer's measured accuracy.
    rng = np.random.default_rng(2)
    table, _ = _table(rng)
    regions = rng.integers(0, len(table), 100)
    weights = np.eye(len(table))[regions]
    strong, weak = np.ones(100), np.zeros(100)
    mean_logit = np.log(table / (1 - table)).mean(axis=1)
    for outcomes in (strong, weak):
        flat = onboard_profile(table, weights, outcomes, rank=0, strength=1.0)
        tight = onboard_profile(table, weights, outcomes, rank=1, strength=1e9)
        assert np.array_equal(np.argsort(flat), np.argsort(mean_logit))
        assert tight == pytest.approx(flat, abs=1e-3)
    assert onboard_profile(table, weights, strong, 0, 1.0).mean() > table.mean() + 0.1
    assert onboard_profile(table, weights, weak, 0, 1.0).mean() < table.mean() - 0.1


def test_caution_lowers_a_newcomer_most_where_it_was_seen_least() -> None:
    rng = np.random.default_rng(3)
    table, _ = _table(rng)
    regions = np.concatenate([np.zeros(90, dtype=int), rng.integers(1, len(table), 10)])
    weights = np.eye(len(table))[regions]
    outcomes = (rng.random(100) < 0.6).astype(float)
    bold = onboard_profile(table, weights, outcomes, rank=2, strength=1.0)
    careful = onboard_profile(table, weights, outcomes, rank=2, strength=1.0, caution=1.0)
    assert (careful < bold).all()
    drop = np.log(bold / (1 - bold)) - np.log(careful / (1 - careful))
    assert drop[0] < np.median(drop[1:])  # region 0 holds 90 of the 100 outcomes


def test_a_weak_ability_prior_lets_a_newcomer_beyond_the_pool_keep_its_measured_level() -> None:
    # the existing experts are all mediocre; a newcomer right 95% of the time is pulled toward
    # their mean less when the prior on ability is weaker
    rng = np.random.default_rng(4)
    table, _ = _table(rng)
    regions = rng.integers(0, len(table), 100)
    weights = np.eye(len(table))[regions]
    outcomes = (rng.random(100) < 0.95).astype(float)
    usual = onboard_profile(table, weights, outcomes, rank=0, strength=1.0)
    weak = onboard_profile(table, weights, outcomes, 0, 1.0, ability_strength=0.01)
    assert (weak > usual).all()
    assert abs(float(weights.mean(0) @ weak) - outcomes.mean()) < abs(
        float(weights.mean(0) @ usual) - outcomes.mean()
    )


def test_stratified_selection_gives_each_region_its_share() -> None:
    rng = np.random.default_rng(5)
    regions = np.repeat(np.arange(4), [400, 300, 200, 100])
    weights = np.eye(4)[regions] * 0.9 + 0.025
    picked = select_profile(weights, 50, "stratified", rng)
    assert len(np.unique(picked)) == 50 and np.all(np.diff(picked) > 0)
    assert np.bincount(regions[picked], minlength=4).tolist() == [20, 15, 10, 5]
    assert len(select_profile(weights, 50, "random", rng)) == 50


def test_doptimal_selection_prefers_the_regions_that_separate_experts() -> None:
    # regions 0-19 separate the experts (a strong factor), regions 20-39 do not
    rng = np.random.default_rng(6)
    k, m = 40, 8
    factor = np.where(np.arange(k) < 20, rng.choice([-2.0, 2.0], k), 0.0)
    z = rng.normal(0, 0.3, k)[:, None] + np.outer(factor, rng.normal(0, 1, m))
    irt = IrtTable(1 / (1 + np.exp(-z)), rank=1)
    weights = np.eye(k)[np.repeat(np.arange(k), 25)]
    picked = select_profile(weights, 40, "doptimal", rng, irt)
    assert (np.repeat(np.arange(k), 25)[picked] < 20).mean() >= 0.9
    with pytest.raises(ValueError, match="choose from"):
        select_profile(weights, 40, "best", rng)


def test_a_newcomers_reply_costs_follow_the_pools_pattern_over_regions_at_its_level() -> None:
    # region 1 is 4x as long as region 0 for every existing expert; the newcomer was profiled
    # only in region 0, where it costs 2: region 1 is predicted long for it too
    table = np.array([[1.0, 3.0], [4.0, 12.0], [1.0, 3.0]])
    groups = np.zeros(20, dtype=int)
    got = onboard_reply_costs(table, groups, np.full(20, 2.0), shrink=10.0)
    assert got == pytest.approx([2.0, 8.0, 2.0])
    # a newcomer as long everywhere (4): its level fits the total (prior 1.6, 6.4, 1.6), and
    # each region it was seen in is pulled from that prior toward its own replies
    seen = onboard_reply_costs(table, np.array([0] * 10 + [1] * 10), np.full(20, 4.0), 10.0)
    assert seen[2] == pytest.approx(1.6)
    assert 1.6 < seen[0] < 4.0 < seen[1] < 6.4


def test_imputation_follows_the_existing_expert_a_newcomer_agrees_with() -> None:
    # the newcomer is expert 0 with 10% of its outcomes flipped; 100 of them are enough for
    # the regression to read expert 0's outcome off every other query
    rng = np.random.default_rng(7)
    known = (rng.random((2000, 5)) < 0.6).astype(float)
    newcomer = np.where(rng.random(2000) < 0.1, 1 - known[:, 0], known[:, 0])
    rows = rng.choice(2000, 100, replace=False)
    flat = np.zeros(2000)
    p = impute_outcomes(known[rows], flat[rows], newcomer[rows], known, flat, c=1.0)
    assert p[known[:, 0] == 1].mean() > 0.75 > 0.25 > p[known[:, 0] == 0].mean()
    # a tiny c keeps the prior's shape (the offset, flat here); the free intercept sets the
    # level to what it scored on the profile
    kept = impute_outcomes(known[rows], flat[rows], newcomer[rows], known, flat, c=1e-9)
    assert kept == pytest.approx(np.full(2000, newcomer[rows].mean()), abs=1e-3)


def test_imputed_reply_costs_follow_how_long_the_existing_experts_write_on_each_query() -> None:
    # every expert writes long on some questions; the newcomer writes twice expert 0's length
    rng = np.random.default_rng(8)
    length = rng.lognormal(0, 1, 3000)
    known = np.log(length[:, None] * np.array([1.0, 3.0, 0.5]) * rng.lognormal(0, 0.1, (3000, 3)))
    newcomer = 2.0 * np.exp(known[:, 0])
    rows = rng.choice(3000, 100, replace=False)
    got = impute_reply_costs(known[rows], newcomer[rows], known, ridge=1.0)
    assert np.median(np.abs(np.log(got / newcomer))) < 0.15
    assert got[rows].sum() == pytest.approx(newcomer[rows].sum())


def test_twin_imputation_finds_the_expert_the_newcomer_copies() -> None:
    # the newcomer answers as expert 2 does (90% of the time); the others are independent
    rng = np.random.default_rng(5)
    known = (rng.random((3000, 5)) < 0.6).astype(float)
    newcomer = np.where(rng.random(3000) < 0.9, known[:, 2], 1 - known[:, 2])
    rows = rng.choice(3000, 100, replace=False)
    prior = np.zeros(3000)
    got = impute_twin(known[rows], prior[rows], newcomer[rows], known, prior, c=1.0)
    ridge = impute_outcomes(known[rows], prior[rows], newcomer[rows], known, prior, c=1.0)
    assert np.corrcoef(got, known[:, 2])[0, 1] > 0.99
    assert np.abs(got - newcomer).mean() < np.abs(ridge - newcomer).mean()
    # a newcomer like nobody: the model with no feature wins, its level is its own
    alone = (rng.random(3000) < 0.3).astype(float)
    flat = impute_twin(known[rows], prior[rows], alone[rows], known, prior, c=1.0)
    assert flat.std() < 0.05 and abs(flat.mean() - alone[rows].mean()) < 0.05


def test_the_coupled_prior_gives_a_strong_newcomer_the_strong_experts_shape() -> None:
    # 2PL-like table: regions differ in how much ability helps (logit = d + a (1 + s)), so the
    # loadings follow ability; 100 outcomes of a newcomer stronger than all fix its ability,
    # and the coupled prior carries the strong experts' shape along, the plain one does not
    rng = np.random.default_rng(5)
    k, m = 40, 8
    difficulty, slope = rng.normal(0, 1, k), rng.normal(0, 0.5, k)
    ability = np.linspace(-1.5, 1.0, m)
    table = 1 / (1 + np.exp(-(difficulty[:, None] + np.outer(1 + slope, ability))))
    truth = 1 / (1 + np.exp(-(difficulty + 1.6 * (1 + slope))))
    regions = rng.integers(0, k, 100)
    weights = np.eye(k)[regions]
    outcomes = (rng.random(100) < truth[regions]).astype(float)
    errors = {
        coupled: np.abs(
            onboard_profile(table, weights, outcomes, 1, 4.0, ability_strength=0.0, coupled=coupled)
            - truth
        ).mean()
        for coupled in (False, True)
    }
    assert errors[True] < 0.6 * errors[False]
    irt = IrtTable(table, rank=1)
    _, coupling, spread = irt._loading_prior(coupled=True)
    # an existing expert's loadings lie on the line, so what it leaves is ~0
    assert spread[1] < 1e-3 * irt.loadings.var() and abs(coupling[0]) > 0.1
    assert irt._loading_prior(coupled=False)[1] == pytest.approx([0.0])
