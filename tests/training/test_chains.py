"""`chain` as an offline strategy: reported like a router, honest about what it saw.

On the synthetic pair pool (`tests.router.chain_pools`: two cheap experts with independent
errors, a strong one always right), the chain matches the strong expert's accuracy at a fraction
of its cost; every call is charged; scrambling every reply it did not call changes nothing.
"""

from __future__ import annotations

import numpy as np

from router.data import RoutingData
from tests.router.chain_pools import pair_pool
from training.chains import ChainStrategy
from training.recorded import reply_table
from training.strategy_eval import evaluate_strategy, is_strategy, reply_key


def test_eval_entry_has_the_router_fields_cv_and_a_calibrated_point() -> None:
    train, test = pair_pool(300, 10), pair_pool(200, 11)
    assert is_strategy("chain")
    m = evaluate_strategy(
        "chain", train, np.zeros((300, 1)), test, np.zeros((200, 1)), seed=0
    ).metrics
    assert m["acc_at_best_single_cost"] >= 0.99
    assert (
        m["cost_share_to_match_best_single"] is None or m["cost_share_to_match_best_single"] < 0.5
    )
    assert 2.0 <= m["calls_per_query"] < 2.6  # the pair, the strong one on disagreement
    cv = {r["share"]: r for r in m["cv"]}
    assert cv[0.5]["experts"] == ["cheap-a", "cheap-b", "strong"] and cv[0.5]["k"] == 2
    cal = m["calibrated"]
    assert cal["met_on_validation"] and cal["cost_share"] < 0.5 and cal["accuracy"] >= 0.99
    assert 0.2 < cal["escalated"] < 0.5  # past the pair: where the cheap two disagree (~36%)
    # chosen on the training folds: the pair-then-strong chain is both cost-safe and the
    # cheapest that matches the strong expert; the cheap chains below it do not match
    for label in ("calibrated_safe", "calibrated_match"):
        point = m[label]
        assert point["met_on_validation"] and point["accuracy"] >= 0.99, label
        assert point["cost_share"] < 0.5 and point["lost"] <= 0.01, label
    assert m["calibrated_match"]["params"]["share"] <= m["calibrated_safe"]["params"]["share"]


def test_cv_points_read_the_folds() -> None:
    strategy = ChainStrategy(shares=(0.3, 1.0, 1.5))
    strategy.router_ = type("Fitted", (), {})()  # only `cv_` is read
    rows = [(0.3, 0.7, 0.3, [0.3]), (1.0, 0.81, 0.9, [0.8, 1.0]), (1.5, 0.83, 0.99, [0.9, 1.1])]
    strategy.router_.cv_ = [  # type: ignore[attr-defined]
        {"share": s, "cv_accuracy": a, "cv_cost_share": c, "cv_fold_cost_shares": f,
         "cv_single_accuracy": 0.8}
        for s, a, c, f in rows
    ]  # fmt: skip
    points = strategy.cv_points()
    assert points["safe"] == ({"share": 1.0}, True)  # 1.5 overshot on one fold
    assert points["cost"] == ({"share": 1.5}, True)  # but kept to 0.99× over all folds
    assert points["match"] == ({"share": 1.0}, True)  # the cheapest at ≥ the single's 0.8
    # the best single model alone costs 1.02× its own training mean held out: a chain at
    # 1.01× costs no more than it does
    strategy.router_.cv_[2] |= {"cv_cost_share": 1.01, "cv_single_cost_share": 1.02}  # type: ignore[attr-defined]
    assert strategy.cv_points()["cost"] == ({"share": 1.5}, True)
    strategy.router_.cv_[2]["cv_single_cost_share"] = 1.0  # type: ignore[attr-defined]
    assert strategy.cv_points()["cost"] == ({"share": 1.0}, True)
    strategy.router_.cv_ = strategy.router_.cv_[:1]  # type: ignore[attr-defined]
    assert strategy.cv_points()["match"] == ({"share": 0.3}, False)  # none matches: cheapest


def _table(data: RoutingData) -> object:
    assert data.responses is not None
    return reply_table(data.responses, data.prompts, reply_key, data.tasks)


def test_unseen_replies_cannot_change_a_decision() -> None:
    train, test = pair_pool(300, 12), pair_pool(200, 13)
    strategy = ChainStrategy().fit(train, np.zeros((300, 1)), _table(train))  # type: ignore[arg-type]
    quality = strategy.quality(np.zeros((200, 1)), test.prompts)
    first = strategy.run(test, _table(test), quality, {"share": 0.5})  # type: ignore[arg-type]
    called = first.called
    assert np.allclose(first.cost, (test.costs * called).sum(axis=1))  # every call charged
    assert (~called).any()
    assert test.responses is not None
    scrambled = test.responses.copy()
    rng = np.random.default_rng(0)
    for i, j in zip(*np.nonzero(~called), strict=True):
        scrambled[i, j] = rng.choice([f"#### {rng.integers(1000)}", "no idea", ""])
    other = RoutingData(**{**test.__dict__, "responses": scrambled})
    again = strategy.run(other, _table(other), quality, {"share": 0.5})  # type: ignore[arg-type]
    assert np.array_equal(first.answer, again.answer)
    assert np.array_equal(first.cost, again.cost) and np.array_equal(first.called, again.called)
