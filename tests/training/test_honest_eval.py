"""What an evaluation may see: decisions blind to realised costs, λ chosen on training data only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from router.data import RoutingData
from router.rl_env import RecordedEnv
from tests.router.pools import pool
from training.calibrate import calibrated_point, pick_lambda
from training.evaluate import router_curve
from training.fitting import calibrated_on_test, fit_router


def scrambled(data: RoutingData, seed: int) -> RoutingData:
    """The same queries with every realised cost shuffled across queries and models and
    rescaled: what a leak of the reply's length or cost into a decision would notice."""
    rng = np.random.default_rng(seed)
    flat = data.costs.ravel()[rng.permutation(data.costs.size)]
    costs = flat.reshape(data.costs.shape) * rng.uniform(0.2, 5.0, data.costs.shape)
    return dataclasses.replace(data, costs=costs)


@pytest.mark.parametrize("family", ["cluster", "knn", "category", "mf", "ensemble"])
def test_decisions_do_not_see_the_realised_costs(family: str) -> None:
    train, x = pool(300, seed=0)
    test, xt = pool(60, seed=1)
    router = fit_router(family, train, x, {}, seed=0)
    scale = float(train.costs.max(axis=1).mean())
    curve, picks = router_curve(router, xt, test, scale)
    curve2, picks2 = router_curve(router, xt, scrambled(test, 5), scale)
    assert all(np.array_equal(a, b) for a, b in zip(picks, picks2, strict=True))
    assert [p[1] for p in curve] == [p[1] for p in curve2]  # same answers, other charges
    assert [p[0] for p in curve] != [p[0] for p in curve2]


def test_recorded_episodes_observe_predicted_costs_and_charge_realised_ones() -> None:
    test, _ = pool(20, seed=1)
    predicted = np.full(test.costs.shape, 1e-4)
    env = RecordedEnv(test.scores, test.costs, 1e-4, 2, predicted_costs=predicted)
    other = RecordedEnv(
        scrambled(test, 3).scores, scrambled(test, 3).costs, 1e-4, 2, predicted_costs=predicted
    )
    rows = np.arange(len(test))
    a, b = env.reset(rows, 0.1), other.reset(rows, 0.1)
    assert all(np.array_equal(u, v) for u, v in zip(env.observe(a), other.observe(b), strict=True))
    assert np.array_equal(env.valid(a), other.valid(b))
    after, _ = env.step(a, np.zeros(len(test), dtype=np.int64))
    assert after.spent == pytest.approx(test.costs[:, 0])


def test_pick_lambda_takes_the_most_accurate_point_within_the_cost() -> None:
    curve = [[3.0, 0.9, 0.0], [2.0, 0.8, 0.1], [1.0, 0.8, 0.2], [0.5, 0.6, 0.3]]
    assert pick_lambda(curve, 2.0) == 0.2  # accuracy tie: the cheaper
    assert pick_lambda(curve, 0.1) is None
    test = [[2.5, 0.7, 0.0], [1.5, 0.75, 0.1], [1.2, 0.74, 0.2], [0.4, 0.5, 0.3]]
    point = calibrated_point(curve, 2.0, test, 2.0)
    assert point == {"lambda": 0.2, "accuracy": 0.74, "cost_usd": 1.2, "cost_share": 0.6}


@pytest.mark.parametrize("calibration", ["cv", "split"])
def test_calibrated_lambda_comes_from_the_training_file_only(calibration: str) -> None:
    train, x = pool(300, seed=0)
    test, xt = pool(60, seed=1)
    scale = float(train.costs.max(axis=1).mean())
    router = fit_router("cluster", train, x, {}, seed=0)
    curve, _ = router_curve(router, xt, test, scale)
    args = ("cluster", train, x, {}, 0, scale)
    points = calibrated_on_test(*args, test, curve, calibration)
    got = points["calibrated"]
    # Another test file (scrambled labels and costs) changes what λ gives, never which λ.
    flipped = dataclasses.replace(scrambled(test, 9), scores=1.0 - test.scores)
    curve2, _ = router_curve(router, xt, flipped, scale)
    points2 = calibrated_on_test(*args, flipped, curve2, calibration)
    got2 = points2["calibrated"]
    assert got is not None and got2 is not None
    assert got["lambda"] == got2["lambda"] and got["chosen_by"] == calibration
    assert got["accuracy"] != got2["accuracy"]
    match, match2 = points["calibrated_match"], points2["calibrated_match"]
    assert (match is None) == (match2 is None)
    assert match is None or match2 is None or match["lambda"] == match2["lambda"]
    # The test file is read once, at that λ.
    at = next(p for p in curve if p[2] == got["lambda"])
    assert (got["cost_usd"], got["accuracy"]) == (at[0], at[1])
