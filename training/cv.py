"""K-fold cross-validation on a training set: how hyperparameters are chosen without a test split.

Folds split queries (all of a query's rows stay together), seeded. Each fold's router is fitted
on the other folds and evaluated exactly as `coe eval` evaluates on a test file; the fold
metrics are averaged (a `None`, "never reached", counts as the worst value: accuracy 0, share 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.data import RoutingData
from training.evaluate import evaluate_scores
from training.fitting import fit_router

__all__ = ["cross_validate", "subset"]


def subset(data: RoutingData, rows: np.ndarray) -> RoutingData:
    """The queries `rows` of `data`, in that order (responses included where it has them)."""
    return RoutingData(
        query_ids=[data.query_ids[i] for i in rows],
        prompts=[data.prompts[i] for i in rows],
        tasks=[data.tasks[i] for i in rows],
        models=data.models,
        scores=data.scores[rows],
        costs=data.costs[rows],
        experts=data.experts,
        responses=None if data.responses is None else data.responses[rows],
    )


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
    sums: list[dict[str, float]] = [
        {
            "acc_at_best_single_cost": 0.0,
            "cost_share_to_match_best_single": 0.0,
            "cost_share_at_95pct_best_quality": 0.0,
            "aiq": 0.0,
        }
        for _ in configs
    ]
    for k in range(folds):
        test_rows = parts[k]
        train_rows = np.concatenate([p for i, p in enumerate(parts) if i != k])
        train, test = subset(data, train_rows), subset(data, test_rows)
        scale = float(train.costs.max(axis=1).mean())
        for c, (name, params) in enumerate(configs):
            router = fit_router(name, train, embeddings[train_rows], dict(params), seed)
            m = evaluate_scores(router.score(embeddings[test_rows], test.prompts), test, scale)
            got = m.metrics
            sums[c]["acc_at_best_single_cost"] += got["acc_at_best_single_cost"] or 0.0
            share = got["cost_share_to_match_best_single"]
            sums[c]["cost_share_to_match_best_single"] += 1.0 if share is None else share
            share95 = got["cost_share_at_95pct_best_quality"]
            sums[c]["cost_share_at_95pct_best_quality"] += 1.0 if share95 is None else share95
            sums[c]["aiq"] += got["aiq"]
    return [
        {"router": name, "params": params, **{key: v / folds for key, v in s.items()}}
        for (name, params), s in zip(configs, sums, strict=True)
    ]
