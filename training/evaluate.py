"""`coe eval`: fit routers on a training set, sweep the cost knob on a test set, score curves.

`report.json` (an interface read by the dashboard and outside tools)::

    {
      "dataset": {"train": "<path>", "test": "<path>", "name": str, "n_train": int,
                  "n_test": int, "models": [str], "costs_estimated": bool,
                  "cost_note": str},
      "routers": {
        "<name>": {"kind": "router" | "reference", "aiq": float, "apgr": float,
                   "cpt50": float | null, "cpt80": float | null, "arena_score": float,
                   "acc_at_best_single_cost": float | null,
                   "cost_share_to_match_best_single": float | null,
                   "cost_share_at_95pct_best_quality": float | null,
                   "calibrated": {"lambda": float, "accuracy": float, "cost_usd": float,
                                  "cost_share": float, "chosen_by": "cv" | "split"} | null,
                   "calibrated_match": {...the same} | null,
                   "selected": {"router": str, "params": {}, "metric": str, "folds": int,
                                "table": [{CV row}, ...]}   (only for `auto`),
                   "curve": [[mean_cost_usd, accuracy, cost_weight], ...],
                   "per_task": {"<task>": accuracy}}, ...},
      "singles": {"<model>": {"accuracy": float, "mean_cost_usd": float}},
      "best_single": str, "weak_single": str, "cost_scale_usd": float
    }

Every decision weighs predicted quality against *predicted* costs (`Router.predicted_costs`:
prompt tokens and each expert's predicted reply, learned from the training file), never the
realised cost of the reply being evaluated; each decision is charged its realised cost.
`calibrated` is the operating point a deployment gets: λ chosen on the training file for "mean
cost ≤ the best single model's", then applied once to the test file
(`training.fitting.calibrated_on_test`); by default on one 20% validation split of the
training file (`coe eval --calibration cv`: on the out-of-fold curve of 5 routers each fitted
on 4 folds of the training file, the curve and its best single model covering the whole
file); `chosen_by` names
the method; `cost_share` is its mean cost over the test best single model's (null: no λ met
the target on the training side; absent on references). `calibrated_match` is the same for the
target "accuracy ≥ the best single model's" (the cheapest such λ): its `cost_share` is what
matching the best single costs.

`best_single` and `oracle` are references computed on the test set itself (the most accurate
single model; the per-query best model, cheapest on ties, swept with the same knob); every other
entry is a router fitted on the training set only. Per-task accuracy is taken at the router's
operating point for `acc_at_best_single_cost` (or λ = 0 if it never gets that cheap). Metric
definitions are in `training.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.base import ROUTERS, Router
from router.costs import prompt_tokens_of
from router.data import RoutingData
from router.policy import choose
from training import metrics
from training.errors import UnknownRouterError

__all__ = [
    "COST_WEIGHTS",
    "RouterResult",
    "build_router",
    "evaluate_curve",
    "evaluate_router",
    "evaluate_scores",
    "router_curve",
    "sweep",
]

#: The λ sweep: 0, then log-spaced; λ is relative to the dataset's `cost_scale_usd`.
COST_WEIGHTS: tuple[float, ...] = (0.0, *np.logspace(-3, 1.5, 91).tolist())


def build_router(name: str, params: dict[str, Any] | None = None) -> Any:
    """A fresh router of family `name` (an `UnknownRouterError` lists the known ones)."""
    if name not in ROUTERS:
        raise UnknownRouterError(f"unknown router {name!r}; choose from {sorted(ROUTERS)}")
    return ROUTERS[name](**(params or {}))


def sweep(
    quality: np.ndarray,
    decide_costs: np.ndarray,
    data: RoutingData,
    cost_scale: float,
    weights: Sequence[float] = COST_WEIGHTS,
) -> tuple[list[list[float]], list[np.ndarray]]:
    """`[[mean_cost, accuracy, λ], ...]` and the chosen expert per query at each λ.

    Decisions weigh `quality` against `decide_costs` (what the router predicts each expert will
    cost, `Router.predicted_costs`); each decision is charged its realised cost `data.costs`.
    """
    rows = np.arange(len(data))
    curve, picks = [], []
    for w in weights:
        chosen = choose(quality, decide_costs, w, cost_scale)
        curve.append(
            [
                float(data.costs[rows, chosen].mean()),
                float(data.scores[rows, chosen].mean()),
                float(w),
            ]
        )
        picks.append(chosen)
    return curve, picks


@dataclass(frozen=True)
class _Refs:
    best: int
    weak: int
    acc: np.ndarray
    cost: np.ndarray


def _refs(data: RoutingData) -> _Refs:
    acc = data.scores.mean(axis=0)
    cost = data.costs.mean(axis=0)
    best = int(np.lexsort((cost, -acc))[0])
    weak = int(np.lexsort((-acc, cost))[0])
    return _Refs(best=best, weak=weak, acc=acc, cost=cost)


@dataclass(frozen=True)
class RouterResult:
    """One entry of `report["routers"]`, before JSON."""

    kind: str
    metrics: dict[str, Any]


def _per_task(data: RoutingData, chosen: np.ndarray) -> dict[str, float]:
    got = data.scores[np.arange(len(data)), chosen]
    tasks = np.asarray([t or "(none)" for t in data.tasks])
    return {t: float(got[tasks == t].mean()) for t in sorted(set(tasks.tolist()))}


def evaluate_scores(
    quality: np.ndarray,
    decide_costs: np.ndarray,
    data: RoutingData,
    cost_scale: float,
    kind: str = "router",
    weights: Sequence[float] = COST_WEIGHTS,
) -> RouterResult:
    """Metrics of one router's predicted `quality` (n, m) on the test `data`, deciding on
    `decide_costs` (see `sweep`)."""
    curve, picks = sweep(quality, decide_costs, data, cost_scale, weights)
    return evaluate_curve(curve, picks, data, kind)


def router_curve(
    router: Router,
    embeddings: np.ndarray,
    data: RoutingData,
    cost_scale: float,
    weights: Sequence[float] = COST_WEIGHTS,
) -> tuple[list[list[float]], list[np.ndarray]]:
    """`sweep` of a fitted router on `data`: its predicted quality against its predicted costs
    (from prompt tokens and predicted reply lengths only), charged the realised costs."""
    quality = router.score(embeddings, data.prompts)
    predicted = router.predicted_costs(embeddings, prompt_tokens_of(data))
    return sweep(quality, predicted, data, cost_scale, weights)


def evaluate_router(
    router: Router, embeddings: np.ndarray, data: RoutingData, cost_scale: float
) -> RouterResult:
    """Metrics of a fitted router on the test `data` (see `router_curve`)."""
    curve, picks = router_curve(router, embeddings, data, cost_scale)
    return evaluate_curve(curve, picks, data)


def evaluate_curve(
    curve: list[list[float]], picks: list[np.ndarray], data: RoutingData, kind: str = "router"
) -> RouterResult:
    """Metrics of operating points `[[mean_cost, accuracy, λ], ...]` on `data`; `picks[i]` is
    the expert whose answer each query got at point i (for per-task accuracy)."""
    refs = _refs(data)
    points = [(c, a) for c, a, *_ in curve]
    best_acc, best_cost = float(refs.acc[refs.best]), float(refs.cost[refs.best])
    weak_acc = float(refs.acc[refs.weak])
    at_cost = metrics.acc_at_cost(points, best_cost)
    operating = 0
    if at_cost is not None:
        operating = max(
            (i for i, (c, a) in enumerate(points) if c <= best_cost * (1 + 1e-9) and a == at_cost),
            key=lambda i: -points[i][0],
        )
    return RouterResult(
        kind=kind,
        metrics={
            "aiq": metrics.aiq(points, float(refs.cost.min()), float(refs.cost.max())),
            "apgr": metrics.apgr(points, weak_acc, best_acc, best_cost),
            "cpt50": metrics.cpt(points, 0.5, weak_acc, best_acc, best_cost),
            "cpt80": metrics.cpt(points, 0.8, weak_acc, best_acc, best_cost),
            "arena_score": max(metrics.arena_score(a, c) for c, a in points),
            "acc_at_best_single_cost": at_cost,
            "cost_share_to_match_best_single": metrics.cost_share_to_match(
                points, best_acc, best_cost
            ),
            "cost_share_at_95pct_best_quality": metrics.cost_share_to_match(
                points, 0.95 * best_acc, best_cost
            ),
            "curve": curve,
            "per_task": _per_task(data, picks[operating]),
        },
    )


def reference_results(data: RoutingData, cost_scale: float) -> dict[str, RouterResult]:
    """`best_single` (one point) and `oracle` (true scores swept), computed on `data`.

    The oracle is omniscient by definition: it decides on realised scores and costs alike.
    """
    refs = _refs(data)
    single = np.zeros_like(data.scores)
    single[:, refs.best] = 1.0
    return {
        "best_single": evaluate_scores(
            single, data.costs, data, cost_scale, "reference", weights=(0.0,)
        ),
        "oracle": evaluate_scores(data.scores, data.costs, data, cost_scale, kind="reference"),
    }
