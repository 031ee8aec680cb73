"""Offline strategies on synthetic pools whose right answer is known.

- a cheap expert right exactly when its reply carries a final-answer marker: the cascade must
  learn to stop on the marker and escalate otherwise, reaching the strong expert's accuracy for
  a fraction of its cost;
- three experts with independent errors: a vote of the three must beat each of them;
- the ledger charges every call and never shows a reply that was not called: scrambling every
  un-called reply leaves every decision unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from router.data import RoutingData
from training.recorded import HIDDEN, Ledger, reply_table
from training.strategies import CascadeStrategy, Episodes, VoteStrategy
from training.strategy_eval import evaluate_strategy, pareto, sweep_strategy

PROFILE = {"profile_params": {"n_skills": 4}}


def _embed(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 16))
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def marker_pool(n: int, seed: int) -> tuple[RoutingData, np.ndarray]:
    """`cheap` (1e-5 USD) is right on 60% of queries, exactly those where its reply ends with
    `#### N`; `strong` (1e-3 USD) is always right and always marked."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(10, 99, n)
    right = rng.random(n) < 0.6
    responses = np.empty((n, 2), dtype=object)
    for i in range(n):
        g = int(gold[i])
        responses[i, 0] = f"So {g}.\n#### {g}" if right[i] else f"maybe {g + 1} or so"
        responses[i, 1] = f"Carefully: {g}.\n#### {g}"
    scores = np.stack([right.astype(float), np.ones(n)], axis=1)
    costs = np.tile([1e-5, 1e-3], (n, 1))
    data = RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"What is question {i}?" for i in range(n)],
        tasks=["arithmetic"] * n,
        models=["cheap", "strong"],
        scores=scores,
        costs=costs,
        responses=responses,
    )
    return data, _embed(n, rng)


def independent_pool(n: int, seed: int, p: float = 0.7) -> tuple[RoutingData, np.ndarray]:
    """Three equally priced experts, each right with probability `p`, independently; a wrong
    reply is a random number nobody else is likely to give."""
    rng = np.random.default_rng(seed)
    right = rng.random((n, 3)) < p
    responses = np.empty((n, 3), dtype=object)
    for i in range(n):
        for j in range(3):
            value = 7 if right[i, j] else int(rng.integers(100, 100_000))
            responses[i, j] = f"The answer is {value}."
    data = RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"Compute item {i}." for i in range(n)],
        tasks=["arithmetic"] * n,
        models=["a", "b", "c"],
        scores=right.astype(float),
        costs=np.full((n, 3), 1e-4),
        responses=responses,
    )
    return data, _embed(n, rng)


def _run(strategy: object, data: RoutingData, x: np.ndarray, point: dict[str, float]) -> Episodes:
    assert isinstance(strategy, VoteStrategy | CascadeStrategy)
    assert data.responses is not None
    table = reply_table(data.responses, data.prompts)
    return strategy.run(data, table, strategy.quality(x, data.prompts), point)


def test_cascade_learns_to_stop_on_the_marker() -> None:
    train, x_train = marker_pool(400, seed=1)
    test, x_test = marker_pool(300, seed=2)
    assert train.responses is not None and test.responses is not None
    cascade = CascadeStrategy(trusts=(0.3,), **PROFILE).fit(
        train, x_train, reply_table(train.responses, train.prompts)
    )
    run = _run(cascade, test, x_test, {"trust": 0.3, "threshold": 0.9})
    unmarked = test.scores[:, 0] == 0
    assert run.score.mean() == 1.0  # the strong expert's accuracy...
    assert np.array_equal(run.calls > 1, unmarked)  # ...escalating exactly when unmarked
    assert run.cost.mean() < 0.5 * test.costs[:, 1].mean()  # ...for under half its cost
    assert np.allclose(run.cost, 1e-5 + 1e-3 * unmarked)


def test_vote_of_three_independent_experts_beats_each() -> None:
    train, x_train = independent_pool(300, seed=3)
    test, x_test = independent_pool(1000, seed=4)
    assert train.responses is not None
    vote = VoteStrategy(**PROFILE).fit(train, x_train, reply_table(train.responses, train.prompts))
    run = _run(vote, test, x_test, {"k": 3, "lambda": 0.0})
    assert (run.calls == 3).all()
    assert run.score.mean() > test.scores.mean(axis=0).max() + 0.04
    # p = 0.7: two or three right (0.784), or one right and picked by the tie-break among
    # three different answers (3 · 0.7 · 0.3² / 3 = 0.063)
    assert run.score.mean() == pytest.approx(0.847, abs=0.03)


@pytest.mark.parametrize(
    ("make", "pool", "point"),
    [
        (
            lambda: CascadeStrategy(trusts=(0.3,), **PROFILE),
            marker_pool,
            {"trust": 0.3, "threshold": 0.9},
        ),
        (lambda: VoteStrategy(**PROFILE), independent_pool, {"k": 2, "lambda": 0.0}),
    ],
)
def test_unseen_replies_cannot_change_a_decision(
    make: object, pool: object, point: dict[str, float]
) -> None:
    assert callable(pool)
    train, x_train = pool(300, seed=5)
    test, x_test = pool(200, seed=6)
    assert callable(make) and train.responses is not None and test.responses is not None
    strategy = make().fit(train, x_train, reply_table(train.responses, train.prompts))
    first = _run(strategy, test, x_test, point)
    called = first.called
    assert np.allclose(first.cost, (test.costs * called).sum(axis=1))  # every call charged
    scrambled = test.responses.copy()
    rng = np.random.default_rng(0)
    for i, j in zip(*np.nonzero(~called), strict=True):
        scrambled[i, j] = rng.choice([f"#### {rng.integers(1000)}", "no idea", ""])
    other = RoutingData(**{**test.__dict__, "responses": scrambled})
    again = _run(strategy, other, x_test, point)
    assert (~called).any()  # the test scrambles something
    assert np.array_equal(first.answer, again.answer)
    assert np.array_equal(first.cost, again.cost) and np.array_equal(first.called, again.called)


def test_ledger_charges_every_call_once_and_hides_the_rest() -> None:
    data, _ = independent_pool(5, seed=7)
    assert data.responses is not None
    ledger = Ledger(data, reply_table(data.responses, data.prompts), np.arange(5))
    ledger.call(np.array([0, 1, 2, 0, 1]))
    ledger.call(np.array([0, 2, 2, 1, 1]), active=np.array([True, True, True, True, False]))
    assert np.allclose(ledger.spent, [1e-4, 2e-4, 1e-4, 2e-4, 1e-4])
    assert list(ledger.calls) == [1, 2, 1, 2, 1]
    seen = ledger.seen()
    assert (seen.keys[~ledger.called] == HIDDEN).all() and (seen.keys[ledger.called] >= 0).all()
    with pytest.raises(ValueError, match="never called"):
        ledger.settle(np.array([2, 0, 0, 0, 0]))


def test_eval_entry_has_the_router_fields_and_a_calibrated_point() -> None:
    train, x_train = marker_pool(400, seed=8)
    test, x_test = marker_pool(200, seed=9)
    result = evaluate_strategy("cascade", train, x_train, test, x_test, PROFILE, seed=0)
    m = result.metrics
    for field in ("aiq", "acc_at_best_single_cost", "cost_share_to_match_best_single", "curve"):
        assert field in m
    assert m["acc_at_best_single_cost"] == 1.0
    assert m["cost_share_to_match_best_single"] < 0.5
    assert 1.0 < m["calls_per_query"] < 2.0
    calibrated = m["calibrated"]
    assert calibrated["met_on_validation"] and calibrated["cost_share"] <= 1.0
    assert calibrated["accuracy"] == 1.0
    costs = [row[0] for row in m["curve"]]
    assert costs == sorted(costs) and len(m["points"]) == len(costs)


@pytest.mark.parametrize("calibration", ["cv", "split"])
def test_calibrated_points_come_from_the_training_file_only(calibration: str) -> None:
    train, x_train = marker_pool(300, seed=8)
    test, x_test = marker_pool(120, seed=9)
    # the same test queries with every outcome flipped and the costs reshuffled
    rng = np.random.default_rng(4)
    costs = rng.permutation(test.costs.ravel()).reshape(test.costs.shape)
    flipped = dataclasses.replace(test, scores=1.0 - test.scores, costs=costs)
    got = [
        evaluate_strategy(
            "cascade", train, x_train, t, x_test, PROFILE, seed=0, calibration=calibration
        ).metrics
        for t in (test, flipped)
    ]
    for label in ("calibrated", "calibrated_match"):
        a, b = got[0][label], got[1][label]
        assert a["params"] == b["params"] and a["chosen_by"] == calibration, label
        assert a["met_on_validation"] == b["met_on_validation"], label
    assert got[0]["calibrated"]["accuracy"] != got[1]["calibrated"]["accuracy"]


def test_pareto_keeps_only_undominated_points() -> None:
    def ep(cost: float, score: float) -> tuple[dict[str, float], Episodes]:
        one = np.ones(1)
        called = np.ones((1, 1), dtype=bool)
        return {}, Episodes(one.astype(int), one * score, one * cost, one.astype(int), called)

    runs = [ep(1.0, 0.5), ep(2.0, 0.4), ep(0.5, 0.5), ep(3.0, 0.9)]
    assert pareto(runs) == [2, 3]


def test_sweep_runs_every_grid_point() -> None:
    data, x = independent_pool(50, seed=10)
    assert data.responses is not None
    table = reply_table(data.responses, data.prompts)
    vote = VoteStrategy(ks=(1, 3), lambdas=(0.0, 1.0), **PROFILE).fit(data, x, table)
    runs = sweep_strategy(vote, data, table, vote.quality(x, data.prompts))
    assert [p for p, _ in runs] == vote.grid() and len(runs) == 4
