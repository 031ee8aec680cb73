"""Calibration and cross-validation on a synthetic problem with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from router import ROUTERS
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from training.calibrate import calibrate
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
