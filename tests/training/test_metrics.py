"""Each metric against a small case computed by hand."""

from __future__ import annotations

import math

import pytest

from training import metrics

# Weak model: cost 1, accuracy 0.5; strong: cost 10, accuracy 0.9.
# Router points: (2, 0.7) is PGR 0.5 at cost share 0.2; (5, 0.86) is PGR 0.9 at share 0.5.
POINTS = [(1.0, 0.5), (2.0, 0.7), (5.0, 0.86)]


def test_acc_at_cost_and_cost_share() -> None:
    assert metrics.acc_at_cost(POINTS, 4.0) == 0.7
    assert metrics.acc_at_cost(POINTS, 0.5) is None
    assert metrics.cost_share_to_match(POINTS, 0.7, 10.0) == pytest.approx(0.2)
    assert metrics.cost_share_to_match(POINTS, 0.95, 10.0) is None


def test_cpt() -> None:
    assert metrics.cpt(POINTS, 0.5, 0.5, 0.9, 10.0) == pytest.approx(0.2)
    assert metrics.cpt(POINTS, 0.8, 0.5, 0.9, 10.0) == pytest.approx(0.5)
    assert metrics.cpt(POINTS, 0.95, 0.5, 0.9, 10.0) is None


def test_apgr_step_envelope() -> None:
    # PGR(best(x)): 0 on [0, 0.1), 0 at 0.1 (weak itself), 0.5 on [0.2, 0.5), 0.9 on [0.5, 1].
    # Trapezoid on a 0.01 grid: 0.5·0.3 + 0.9·0.5 + half-steps at the two jumps.
    expected = 0.5 * 0.3 + 0.9 * 0.5 + 0.01 * (0.5 / 2 + 0.4 / 2)
    assert metrics.apgr(POINTS, 0.5, 0.9, 10.0) == pytest.approx(expected, abs=1e-9)


def test_monotone_hull_drops_dominated_and_decreasing_points() -> None:
    pts = [(1.0, 0.5), (2.0, 0.55), (3.0, 0.8), (4.0, 0.7), (5.0, 0.8)]
    assert metrics.monotone_hull(pts) == [(1.0, 0.5), (3.0, 0.8)]


def test_aiq() -> None:
    # Hull (1, 0.5) → (3, 0.8), flat 0.8 to 5; range [1, 5]:
    # area = (0.5 + 0.8)/2·2 + 0.8·2 = 2.9, / 4.
    pts = [(1.0, 0.5), (3.0, 0.8), (4.0, 0.6)]
    assert metrics.aiq(pts, 1.0, 5.0) == pytest.approx(2.9 / 4, abs=1e-3)
    # Below the cheapest point the hull counts 0: range [0, 2], hull from 1.
    assert metrics.aiq([(1.0, 0.5)], 0.0, 2.0) == pytest.approx(0.25, abs=1e-3)


def test_arena_score() -> None:
    # c = 1 USD per 1,000 queries: C = log2(200) / (log2 200 − log2 0.0044).
    c_term = math.log2(200) / (math.log2(200) - math.log2(0.0044))
    expected = 1.1 * 0.8 * c_term / (0.1 * 0.8 + c_term)
    assert metrics.arena_score(0.8, 0.001) == pytest.approx(expected)
    assert metrics.arena_score(0.8, 1.0) == 0.0  # 1,000 USD per 1,000 queries: clamped, C = 0
    assert metrics.arena_score(1.0, 0.0) == pytest.approx(1.0)  # free and perfect
