"""Calibration and cross-validation on a synthetic problem with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from router import ROUTERS
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from training.calibrate import (
    Pooled,
    calibrate,
    calibration_parts,
    choose_points,
    out_of_fold,
)
from training.cv import cross_validate
from training.errors import CoeTrainingError


def _data(n: int = 80) -> tuple[RoutingData, np.ndarray]:
    # Strong is right everywhere; cheap is right on even queries only, at a tenth of the cost.
    rng = np.random.default_rng(0)
    parity = np.arange(n) % 2
    x = np.eye(2)[parity] + rng.normal(0, 0.05, (n, 2))
    scores = np.column_stack([np.ones(n), (parity == 0).astype(float)])
    data = RoutingData(
        [f"q{i}" for i in range(n)],
        [f"p{i}" for i in range(n)],
        [f"t{p}" for p in parity],
        ("strong", "cheap"),
        scores,
        np.tile([1.0, 0.1], (n, 1)),
        (ExpertDescriptor("strong", 1, 1), ExpertDescriptor("cheap", 0.1, 0.1)),
    )
    return data, x


def test_quality_target_picks_the_cheapest_point_that_meets_it() -> None:
    data, x = _data()
    router = ROUTERS["category"]().fit(data, x)
    result = calibrate(router, data, x, quality_share=0.99)
    # Perfect routing: even → cheap, odd → strong: accuracy 1 at mean cost 0.55.
    assert result["accuracy"] == pytest.approx(1.0)
    assert result["cost_share_of_strongest"] == pytest.approx(0.55)
    assert result["cost_weight"] > 0


def test_cost_target_and_unreachable_target() -> None:
    data, x = _data()
    router = ROUTERS["category"]().fit(data, x)
    assert calibrate(router, data, x, cost_share=0.1)["accuracy"] == pytest.approx(0.5)
    with pytest.raises(CoeTrainingError, match="relax the target"):
        calibrate(router, data, x, cost_share=0.01)


def test_cross_validation_prefers_a_learner_to_random() -> None:
    data, x = _data()
    rows = cross_validate(data, x, [("category", {}), ("random", {})], folds=4)
    assert rows[0]["cost_share_to_match_best_single"] == pytest.approx(0.55, abs=0.02)
    assert rows[0]["aiq"] > rows[1]["aiq"]


def test_k_fold_parts_hold_every_query_out_once() -> None:
    parts = calibration_parts(23, "cv", seed=3)
    held = np.concatenate([h for _, h in parts])
    assert len(parts) == 5 and sorted(held.tolist()) == list(range(23))
    for fit_rows, held_rows in parts:
        assert not set(fit_rows) & set(held_rows) and len(fit_rows) + len(held_rows) == 23
    (fit_rows, held_rows), *rest = calibration_parts(20, "split", seed=3)
    assert not rest and len(held_rows) == 4 and len(fit_rows) == 16
    with pytest.raises(CoeTrainingError, match="unknown calibration"):
        calibration_parts(20, "holdout")


def test_pooling_puts_each_held_out_outcome_on_its_own_query() -> None:
    # 10 queries, 2 models: "strong" right on all but query 9 at cost 1, "cheap" right on the
    # even ones at 0.1. Grid point g of the fake candidate answers query i with cheap when
    # i < 3g; the folds hold the queries out in a shuffled order, so an outcome pooled onto
    # the wrong query would show.
    n = 10
    scores = np.column_stack([np.r_[np.ones(n - 1), 0.0], (np.arange(n) % 2 == 0) * 1.0])
    data = RoutingData(
        [f"q{i}" for i in range(n)],
        [f"p{i}" for i in range(n)],
        [None] * n,
        ("strong", "cheap"),
        scores,
        np.tile([1.0, 0.1], (n, 1)),
        (ExpertDescriptor("strong", 1, 1), ExpertDescriptor("cheap", 0.1, 0.1)),
    )
    seen: list[np.ndarray] = []

    def sweep_part(fit_rows: np.ndarray, held_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(fit_rows)
        pick = np.array([[int(i < 3 * g) for i in held_rows] for g in range(4)])
        rows = np.arange(len(held_rows))
        held = data.take(held_rows)
        return (
            np.stack([held.scores[rows, p] for p in pick]),
            np.stack([held.costs[rows, p] for p in pick]),
        )

    parts = calibration_parts(n, "cv", seed=0, folds=5)
    pooled = out_of_fold(parts, sweep_part)
    assert sorted(pooled.rows.tolist()) == list(range(n)) and len(seen) == 5
    order = np.argsort(pooled.rows)
    # grid point g: cheap on queries 0 … 3g−1 (half of them wrong), strong on the rest
    for g in range(4):
        cheap = np.arange(n) < 3 * g
        want = np.where(cheap, scores[:, 1], scores[:, 0])
        assert np.array_equal(pooled.score[g][order], want)
        assert pooled.curve()[g][0] == pytest.approx((0.1 * cheap.sum() + (~cheap).sum()) / n)
    # point 0 is strong alone (0.9 at 1.0), the only point ≥ its accuracy; point 1 (cheap on
    # 0–2, wrong on 1) 0.8 at 0.73, the most accurate within its cost apart from it
    assert [round(p[1], 2) for p in pooled.curve()] == [0.9, 0.8, 0.6, 0.5]
    assert choose_points(pooled, data) == {"calibrated": 0, "calibrated_match": 0}
    # a point as accurate as strong at half its cost, wrong on another query (3 instead of
    # 9): it matches strong, but not by a paired SE; strong alone (zero SE) still does
    other = np.r_[np.ones(n - 1), 1.0]
    other[3] = 0.0
    tie = Pooled(
        np.arange(n), np.stack([scores[:, 0], other]), np.stack([np.ones(n)] * 2) / [[1], [2]]
    )
    assert choose_points(tie, data)["calibrated_match"] == 1
    assert choose_points(tie, data, margin=1.0)["calibrated_match"] == 0
