from __future__ import annotations

import numpy as np

from router.policy import Policy, choose, utilities


def test_quality_wins_at_zero_cost_weight() -> None:
    d = Policy().decide(["a", "b"], np.array([0.9, 0.5]), np.array([2.0, 1.0]))
    assert d.ranked == ["a", "b"]


def test_cost_weight_per_query_scale_is_unit_free() -> None:
    # Utility a = 0.9 − 1·2/2 = −0.1, b = 0.5 − 1·1/2 = 0.0: b wins, whatever the currency.
    for unit in (1.0, 1e-6):
        d = Policy(cost_weight=1.0).decide(
            ["a", "b"], np.array([0.9, 0.5]), np.array([2.0, 1.0]) * unit
        )
        assert d.ranked[0] == "b"
        assert d.utility["a"] == -0.1 + 0.0 or abs(d.utility["a"] + 0.1) < 1e-12


def test_global_cost_scale_trades_usd_for_quality() -> None:
    q, c = np.array([[0.9, 0.5]]), np.array([[2.0, 1.0]])
    np.testing.assert_allclose(utilities(q, c, 0.1, cost_scale=1.0), [[0.7, 0.4]])
    assert choose(q, c, 0.1, cost_scale=1.0)[0] == 0
    assert choose(q, c, 1.0, cost_scale=1.0)[0] == 1


def test_ties_go_to_the_cheaper_expert() -> None:
    q, c = np.array([[0.5, 0.5, 0.5]]), np.array([[3.0, 1.0, 2.0]])
    assert choose(q, c, 0.0)[0] == 1
    assert Policy().decide(["x", "y", "z"], q[0], c[0]).ranked == ["y", "z", "x"]


def test_max_cost_and_unavailable() -> None:
    d = Policy().decide(
        ["a", "b", "c"],
        np.array([0.9, 0.8, 0.1]),
        np.array([5.0, 1.0, 1.0]),
        max_cost_usd=2.0,
        unavailable={"b"},
    )
    assert d.ranked == ["c", "b"]
    assert "max_cost_usd" in d.excluded["a"]


def test_empty_pool() -> None:
    assert Policy().decide([], np.array([]), np.array([])).ranked == []
