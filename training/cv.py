"""K-fold cross-validation on a training set: how hyperparameters are chosen without a test split.

Folds split queries (all of a query's rows stay together), seeded. Each fold's router is fitted
on the other folds and evaluated exactly as `coe eval` evaluates on a test file; the fold
metrics are averaged (a `None`, "never reached", counts as the worst value: accuracy 0, share 1);
`aiq_sd` is the spread of AIQ over folds, to read a difference between configs against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.data import RoutingData
from training.evaluate import evaluate_router
from training.fitting import fit_router

__all__ = ["cross_validate", "subset"]


def subset(data: RoutingData, rows: np.ndarray) -> RoutingData:
    """The queries `rows` of `data`, in that order (`RoutingData.take`)."""
    return data.take(rows)


def cross_validate(
    data: RoutingData,
    embeddings: np.ndarray,
    configs: Sequence[tuple[str, dict[str, Any]]],
    folds: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Mean CV metrics per `(family, params)` config, in the order given."""
    order = np.random.default_rng(seed).permutation(len(data))
    parts = np.array_split(order, folds)
    keys = (
        "acc_at_best_single_cost",
        "cost_share_to_match_best_single",
        "cost_share_at_95pct_best_quality",
        "aiq",
    )
    values: list[dict[str, list[float]]] = [{key: [] for key in keys} for _ in configs]
    for k in range(folds):
        test_rows = parts[k]
        train_rows = np.concatenate([p for i, p in enumerate(parts) if i != k])
        train, test = subset(data, train_rows), subset(data, test_rows)
        scale = float(train.costs.max(axis=1).mean())
        for c, (name, params) in enumerate(configs):
            router = fit_router(name, train, embeddings[train_rows], dict(params), seed)
            got = evaluate_router(router, embeddings[test_rows], test, scale).metrics
            for key in keys:
                values[c][key].append(_worst_if_never(key, got[key]))
    return [
        {
            "router": name,
            "params": params,
            **{key: float(np.mean(v)) for key, v in got.items()},
            "aiq_sd": float(np.std(got["aiq"], ddof=1)) if folds > 1 else 0.0,
        }
        for (name, params), got in zip(configs, values, strict=True)
    ]


def _worst_if_never(key: str, value: float | None) -> float:
    """A fold figure, "never reached" (None) counted as the worst: accuracy 0, cost share 1."""
    if value is not None:
        return float(value)
    return 1.0 if key.startswith("cost_share") else 0.0
