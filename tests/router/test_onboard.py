"""The low-rank (IRT) model that places a new expert from a small profile."""

from __future__ import annotations

import numpy as np
import pytest

from router.onboard import IrtTable, onboard_profile


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
