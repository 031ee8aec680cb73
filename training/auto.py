"""`--router auto`: choose the router family and its hyperparameters per training file, by
k-fold cross-validation on that file only.

No family wins everywhere: on the LLMRouter training file a stacked router beat the ensemble in
5-fold CV and on MMLU-Pro's it did not (README, "Routers trained on benchmark data"). What a user
wants is the best family *for their data*, chosen without a test file: `fit_auto` runs
`training.cv.cross_validate` over `candidates` on the training data, keeps the one with the best
mean fold `metric`, refits it on all the data and returns that router (an ordinary artifact of
the winning family, which the gateway serves like any other). The CV table travels with it as
`router.selection_` and is what `coe train --router auto` prints and `coe eval` reports.

Because the choice is part of the fit, `coe eval`'s calibrated operating point re-runs it on the
calibration split's fitting part: the whole procedure, choice included, is what gets calibrated
and tested, never a choice made with the test file in view.

Example::

    router = fit_auto(data, embeddings, {"folds": 5, "metric": "aiq"}, seed=0)
    router.name                    # e.g. "stack"
    router.selection_["table"]     # one row per candidate: its mean CV figures
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.base import ROUTERS, Router
from router.data import RoutingData
from training.errors import CoeTrainingError

__all__ = [
    "AUTO",
    "DEFAULT_CANDIDATES",
    "DEFAULT_FOLDS",
    "METRICS",
    "check_auto_params",
    "fit_auto",
    "pick",
    "selection_table",
]

#: The name `coe train --router` and `coe eval --routers` take for this choice.
AUTO = "auto"

#: (family, hyperparameters) `auto` chooses among unless told otherwise: the configurations
#: `benchmarks/router_cv.py` found best or within noise of the best on at least one of the
#: LLMRouter, MATH-L5 and GSM8K training files (category and stack on LLMRouter, irt rank 1 and
#: ensemble on MATH-L5 and GSM8K), plus the best single model, so that a file where no router
#: helps gets the safe answer. Families never near the top (classifier, mf) are left out: each
#: candidate costs `folds` fits.
DEFAULT_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("best_single", {}),
    ("cluster", {}),
    ("knn", {"k": 100}),
    ("category", {}),
    ("ensemble", {}),
    ("stack", {}),
    ("irt", {"rank": 1, "temperature": 1.0}),
)

#: Folds of the choice: 3 keeps `auto` at ~3× one fit per candidate (and `coe eval` runs it
#: twice: once more for the calibration split); a closer call needs more (`{"folds": 5}`).
DEFAULT_FOLDS = 3

#: CV figure → True where higher is better (`training.cv.cross_validate`'s keys).
METRICS: dict[str, bool] = {
    "aiq": True,
    "acc_at_best_single_cost": True,
    "cost_share_to_match_best_single": False,
    "cost_share_at_95pct_best_quality": False,
}

_KNOWN = {"candidates", "folds", "metric"}


def check_auto_params(params: dict[str, Any] | None) -> None:
    """Fail before any fitting on a bad `auto` setting (unknown key, family or metric)."""
    params = params or {}
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise CoeTrainingError(
            f"auto takes {sorted(_KNOWN)}, not {unknown}: e.g. "
            '{"candidates": [["knn", {"k": 40}], ["cluster", {}]], "folds": 5, "metric": "aiq"}'
        )
    metric = params.get("metric", "aiq")
    if metric not in METRICS:
        raise CoeTrainingError(f"auto metric {metric!r} is not one of {sorted(METRICS)}")
    if int(params.get("folds", DEFAULT_FOLDS)) < 2:
        raise CoeTrainingError("auto needs folds ≥ 2")
    for family, _ in _candidates(params):
        if family == AUTO or family not in ROUTERS:
            raise CoeTrainingError(
                f"auto candidate {family!r} is not a router family; choose from {sorted(ROUTERS)}"
            )


def _candidates(params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    given = params.get("candidates", DEFAULT_CANDIDATES)
    try:
        return [(str(family), dict(hyper)) for family, hyper in given]
    except (TypeError, ValueError) as exc:
        raise CoeTrainingError(
            f"auto candidates must be [family, params] pairs, got {given!r}"
        ) from exc


def pick(table: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The row of `table` with the best mean `metric` (the earlier candidate on ties, so the
    candidate order is the preference order among equals)."""
    sign = 1.0 if METRICS[metric] else -1.0
    best = max(range(len(table)), key=lambda i: (sign * table[i][metric], -i))
    return dict(table[best])


def fit_auto(
    data: RoutingData, embeddings: np.ndarray | None, params: dict[str, Any], seed: int
) -> Router:
    """The candidate with the best k-fold CV `metric` on `data`, refitted on all of `data`;
    its `selection_` holds the choice and the whole CV table."""
    from training.cv import cross_validate
    from training.fitting import fit_router

    check_auto_params(params)
    candidates = _candidates(params)
    folds, metric = int(params.get("folds", DEFAULT_FOLDS)), str(params.get("metric", "aiq"))
    if embeddings is None:
        raise CoeTrainingError("auto needs the training embeddings (its candidates use them)")
    table = cross_validate(data, embeddings, candidates, folds=folds, seed=seed)
    chosen = pick(table, metric)
    router = fit_router(chosen["router"], data, embeddings, dict(chosen["params"]), seed)
    router.selection_ = {
        "metric": metric,
        "folds": folds,
        "router": chosen["router"],
        "params": chosen["params"],
        "table": table,
    }
    return router


def selection_table(selection: dict[str, Any]) -> str:
    """The CV table of a `selection_` as Markdown, the chosen row marked."""
    lines = [
        f"chosen by {selection['folds']}-fold CV on the training file ({selection['metric']}):",
        "| router | params | AIQ | acc ≤ best cost | share to match | |",
        "|---|---|---|---|---|---|",
    ]
    for row in selection["table"]:
        mark = (
            "← chosen"
            if row["router"] == selection["router"] and row["params"] == selection["params"]
            else ""
        )
        lines.append(
            f"| {row['router']} | {row['params']} | {row['aiq']:.4f} ± {row['aiq_sd']:.4f} | "
            f"{row['acc_at_best_single_cost']:.4f} | "
            f"{row['cost_share_to_match_best_single']:.3f} | {mark} |"
        )
    return "\n".join(lines)
