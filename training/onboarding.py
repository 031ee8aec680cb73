"""Leave-one-model-out onboarding: how well does a router take a new expert from a small profile?

For each held-out model X: a `cluster` router fitted with every model ("full"), one fitted
without X ("left out"), and the left-out one given X from `n_profile` profiled queries drawn
from the fitting file (`ClusterRouter.add_experts`, what `coe train --base --add` runs), over
`draws` random profiles. Each is scored by its AIQ on the evaluation file's full pool (an
expert a router does not know is never chosen). `lomo_cv` runs this on a split of a TRAINING
file, which is how the onboarding hyperparameters are chosen (never on the test file).

Example::

    rows = lomo(train, x_train, test, x_test, ["gemini-1.5-flash-002"], [{}])
    rows[0].added[0]           # AIQ of each profile draw, first onboarding config
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from router.base import Router
from router.cluster import ClusterRouter
from router.costs import prompt_tokens_of
from router.data import RoutingData
from training.evaluate import evaluate_curve, sweep
from training.fitting import validation_split

__all__ = ["LomoRow", "columns", "lomo", "lomo_cv", "pool_aiq"]


@dataclasses.dataclass
class LomoRow:
    """One held-out model: AIQs of the full and left-out routers; per onboarding config the
    AIQ of each profile draw (`added`) and the held-out model's mean share of the queries."""

    model: str
    full: float
    left_out: float
    share_full: float
    added: list[list[float]]
    share_added: list[float]


def columns(data: RoutingData, models: Sequence[str]) -> RoutingData:
    """`data` restricted to `models` (in that order), replies dropped."""
    cols = [list(data.models).index(m) for m in models]
    return dataclasses.replace(
        data,
        models=list(models),
        scores=data.scores[:, cols],
        costs=data.costs[:, cols],
        experts=[data.experts[j] for j in cols],
        responses=None,
    )


def pool_aiq(
    router: Router, x: np.ndarray, data: RoutingData, scale: float
) -> tuple[float, np.ndarray]:
    """AIQ of `router` on the full pool of `data` (experts it does not know are never chosen),
    and the mean share `(m,)` of queries each expert gets over the λ sweep."""
    cols = [list(data.models).index(m) for m in router.models_]
    quality = np.full(data.scores.shape, -1e9)
    costs = np.zeros(data.costs.shape)
    quality[:, cols] = router.score(x, data.prompts)
    costs[:, cols] = router.predicted_costs(x, prompt_tokens_of(data))
    curve, picks = sweep(quality, costs, data, scale)
    share = np.mean([np.bincount(p, minlength=len(data.models)) / len(data) for p in picks], 0)
    return float(evaluate_curve(curve, picks, data).metrics["aiq"]), share


def lomo(
    train: RoutingData,
    x_train: np.ndarray,
    test: RoutingData,
    x_test: np.ndarray,
    held_out: Sequence[str],
    configs: Sequence[dict[str, Any]],
    router_params: dict[str, Any] | None = None,
    n_profile: int = 100,
    draws: int = 3,
    seed: int = 0,
) -> list[LomoRow]:
    """One `LomoRow` per held-out model; `configs` are onboarding parameters of
    `ClusterRouter` (`onboard`, `onboard_rank`, …) tried on the same profile draws, and
    optionally `select`, how the profiled queries are chosen (`ClusterRouter.select_profile`;
    default random; `answered`: at random among the queries some other model got right, all a
    training file without a `gold` column lets `coe profile --from-training` grade)."""
    params = router_params or {}
    scale = float(train.costs.max(axis=1).mean())
    full_aiq, full_share = pool_aiq(
        ClusterRouter(**params).fit(train, x_train), x_test, test, scale
    )
    rows = []
    for model in held_out:
        j = list(train.models).index(model)
        without = ClusterRouter(**params).fit(
            columns(train, [m for m in train.models if m != model]), x_train
        )
        added, shares = [], []
        for config in configs:
            onboarder = copy.copy(without)
            for key, value in config.items():
                if key != "select":
                    setattr(onboarder, key, value)
            got = [
                pool_aiq(
                    onboarder.add_experts(columns(train.take(p), [model]), x_train[p]),
                    x_test,
                    test,
                    scale,
                )
                for p in _draws(
                    onboarder,
                    x_train,
                    config.get("select", "random"),
                    n_profile,
                    draws,
                    [seed, j],
                    # what a training file without a gold column can grade: the queries some
                    # incumbent got right (`training.benchsets.training_questions`)
                    np.delete(train.scores, j, axis=1).max(axis=1) >= 1.0,
                    train,
                )
            ]
            added.append([aiq for aiq, _ in got])
            shares.append(float(np.mean([share[j] for _, share in got])))
        rows.append(
            LomoRow(
                model,
                full_aiq,
                pool_aiq(without, x_test, test, scale)[0],
                float(full_share[j]),
                added,
                shares,
            )
        )
    return rows


def _draws(
    router: ClusterRouter,
    x: np.ndarray,
    method: str,
    n_profile: int,
    draws: int,
    seed: list[int],
    gradable: np.ndarray,
    data: RoutingData | None = None,
) -> list[np.ndarray]:
    """`draws` profiles of `n_profile` rows of `x`, chosen by `method` (`select_profile`, or
    `answered`: at random among the `gradable` rows); the random draws are the same for every
    config, so configs compare on the same profiles."""
    if method in ("random", "answered"):
        rng = np.random.default_rng(seed)
        pool = np.arange(len(x)) if method == "random" else np.flatnonzero(gradable)
        return [np.sort(rng.choice(pool, n_profile, replace=False)) for _ in range(draws)]
    if method == "doptimal-cf":  # needs the remembered training queries: `data`'s, in order
        assert data is not None
        chosen = router.select_training_profile(data.query_ids, data.prompts, n_profile, method)
        return [chosen] * draws
    return [
        router.select_profile(
            x, n_profile, method, seed=int(np.random.default_rng([*seed, d]).integers(2**31))
        )
        for d in range(draws)
    ]


def lomo_cv(
    train: RoutingData,
    x_train: np.ndarray,
    held_out: Sequence[str],
    configs: Sequence[dict[str, Any]],
    fraction: float = 0.2,
    seed: int = 0,
    **kwargs: Any,
) -> list[LomoRow]:
    """`lomo` on a seeded split of a training file: fitted on `1 - fraction` of its queries,
    scored on the rest."""
    fit_rows, val_rows = validation_split(len(train), fraction, seed)
    return lomo(
        train.take(fit_rows),
        x_train[fit_rows],
        train.take(val_rows),
        x_train[val_rows],
        held_out,
        configs,
        seed=seed,
        **kwargs,
    )
