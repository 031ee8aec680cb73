"""The field's routing metrics, computed from a router's cost-quality curve.

A router swept over the policy's `cost_weight` λ gives operating points `(c, a)`: the mean cost
in USD per query and the mean score (accuracy) on the evaluation queries. Single models are
points too. Definitions, as used here:

- **Accuracy and mean cost at each λ**: `a = mean_i score[i, chosen_i]`,
  `c = mean_i cost[i, chosen_i]`.
- **Envelope** `best(x)`: the highest accuracy among the router's points with cost ≤ x
  (a router can always be run at any of its operating points).
- **PGR and APGR** (RouteLLM, generalised to N models): `strong` is the most accurate single
  model on the evaluation data and `weak` the cheapest (most accurate on ties), as RouteLLM's
  weak model (Mixtral) is its cheap one. (The least accurate model would be a poor anchor with
  N models: it is often dominated, neither cheap nor good, which makes every PGR trivially
  high.) `PGR(a) = (a − a_weak)/(a_strong − a_weak)`.
  RouteLLM plots PGR against the share of calls to the strong model; with N models the x axis is
  the cost share `x = c / c_strong`. `APGR = ∫₀¹ PGR(best(x · c_strong)) dx`, integrated on 101
  evenly spaced x (trapezoid rule), where the envelope of no point counts as PGR 0 and PGR is
  clipped to [0, 1] before integrating.
- **CPT(p)** (RouteLLM's "call-performance threshold"): the lowest cost share `c / c_strong`
  over the router's points with `PGR ≥ p`; None if no point reaches it. `cpt50` = CPT(0.5),
  `cpt80` = CPT(0.8).
- **AIQ** (RouterBench, "average improvement in quality"): the area under the router's
  non-decreasing convex hull of `(c, a)` points over the cost range `[c_min, c_max]` of the single
  models, divided by `c_max − c_min`. The hull is the upper convex hull of the points cut after
  its most accurate point and held flat beyond it; below the router's cheapest point it is 0.
- **RouterArena score**: `S = (1 + β)·A·C / (β·A + C)`, β = 0.1, with
  `C = (log2 200 − log2 c) / (log2 200 − log2 0.0044)` where c is USD per 1,000 queries clamped
  to [0.0044, 200]; reported as the highest S over the router's points.
- **acc_at_best_single_cost**: `best(c_best)` where `best_single` is the most accurate single
  model on the evaluation data and `c_best` its mean cost.
- **cost_share_to_match_best_single**: the lowest `c / c_best` over points with
  `a ≥ a_best − 1e-9`; None if none.
- **cost_share_at_95pct_best_quality** (RouteLLM's "cost saved at 95% of GPT-4 quality" is one
  minus it): the lowest `c / c_best` over points with `a ≥ 0.95 · a_best`; None if none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Point",
    "acc_at_cost",
    "aiq",
    "apgr",
    "arena_score",
    "cost_share_to_match",
    "cpt",
    "monotone_hull",
]

#: A curve point: (mean cost USD, accuracy).
Point = tuple[float, float]

ARENA_BETA = 0.1
ARENA_COST_MIN, ARENA_COST_MAX = 0.0044, 200.0


def acc_at_cost(points: Sequence[Point], max_cost: float) -> float | None:
    """The best accuracy among points with cost ≤ `max_cost` (None if there is none)."""
    reach = [a for c, a in points if c <= max_cost * (1 + 1e-9)]
    return max(reach) if reach else None


def cost_share_to_match(points: Sequence[Point], accuracy: float, ref_cost: float) -> float | None:
    """Lowest `cost / ref_cost` over points with accuracy ≥ `accuracy` (None if never)."""
    costs = [c for c, a in points if a >= accuracy - 1e-9]
    if not costs or ref_cost <= 0:
        return None
    return min(costs) / ref_cost


def _trapezoid(ys: np.ndarray, xs: np.ndarray) -> float:
    """∫ y dx by the trapezoid rule (np.trapezoid needs numpy 2; we support 1.26)."""
    return float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / 2.0)


def _pgr(a: float, weak: float, strong: float) -> float:
    return (a - weak) / (strong - weak) if strong > weak else 0.0


def apgr(points: Sequence[Point], weak_acc: float, strong_acc: float, strong_cost: float) -> float:
    """Area under PGR versus cost share in [0, 1] (see the module docstring)."""
    xs = np.linspace(0.0, 1.0, 101)
    ys = []
    for x in xs:
        best = acc_at_cost(points, x * strong_cost)
        ys.append(0.0 if best is None else min(1.0, max(0.0, _pgr(best, weak_acc, strong_acc))))
    return _trapezoid(np.asarray(ys), xs)


def cpt(
    points: Sequence[Point], p: float, weak_acc: float, strong_acc: float, strong_cost: float
) -> float | None:
    """CPT(p): lowest cost share `c / strong_cost` at which PGR ≥ p (None if never)."""
    shares = [c / strong_cost for c, a in points if _pgr(a, weak_acc, strong_acc) >= p - 1e-9]
    return min(shares) if shares and strong_cost > 0 else None


def monotone_hull(points: Sequence[Point]) -> list[Point]:
    """The non-decreasing upper convex hull of the points, cheapest first."""
    pts = sorted(set(points))
    hull: list[Point] = []
    for p in pts:
        # Pop while the last turn is not clockwise (keeps the upper hull).
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -hull[i][0])) if hull else -1
    return hull[: top + 1]


def aiq(points: Sequence[Point], c_min: float, c_max: float) -> float:
    """Normalised area under the monotone hull over `[c_min, c_max]`."""
    hull = monotone_hull(points)
    if not hull or c_max <= c_min:
        return hull[-1][1] if hull else 0.0
    xs = np.linspace(c_min, c_max, 1001)
    hx = np.array([p[0] for p in hull])
    hy = np.array([p[1] for p in hull])
    ys = np.interp(xs, hx, hy, left=0.0, right=hy[-1])
    ys[xs < hx[0]] = 0.0
    return _trapezoid(ys, xs) / (c_max - c_min)


def arena_score(accuracy: float, cost_per_query_usd: float, beta: float = ARENA_BETA) -> float:
    """RouterArena's S for one operating point (cost given per query, scaled to 1,000)."""
    c = min(ARENA_COST_MAX, max(ARENA_COST_MIN, cost_per_query_usd * 1000.0))
    span = math.log2(ARENA_COST_MAX) - math.log2(ARENA_COST_MIN)
    cost_term = (math.log2(ARENA_COST_MAX) - math.log2(c)) / span
    denom = beta * accuracy + cost_term
    return 0.0 if denom <= 0 else (1 + beta) * accuracy * cost_term / denom
