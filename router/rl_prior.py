"""What the RL policy may know about a query before it calls anyone, in a form that generalises.

Trained on the raw 384-dimensional MiniLM embedding, REINFORCE memorises which training queries
a cheap expert gets right (ZeroEval MATH-L5: training return 0.92 while the held-out return
peaks at iteration 24; RouteLLM GSM8K: the same, README "RL router"). Two inputs that carry over
to new queries instead:

- `out_of_fold`: a one-shot router's predicted quality of each expert on each training query,
  each fold predicted by a router fitted on the other folds, so that the policy trains on
  predictions as good (and as wrong) as those it gets when serving, where `fit_prior`'s router,
  fitted on all the training data, scores the live query. m numbers per query instead of 384:
  little to memorise, and what the one-shot routers know about the query is kept.
- `pareto_shortlist`: the experts on the training file's accuracy–cost front (no other expert is
  both at least as accurate and at most as costly). With 20 experts most are dominated, and
  REINFORCE spends its exploration on them; a cascade over the front is what a cost-ordered
  chain of escalations needs.

Both are plain numpy at serving time (`knn`, the default prior family, is numpy).

Example::

    prior = out_of_fold("knn", {"k": 40}, data, embeddings, folds=5, seed=0)   # (n, m)
    allowed = pareto_shortlist(data.scores, data.costs)                        # (m,) bool
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.base import ROUTERS, Router
from router.data import RoutingData

__all__ = ["PRIOR_CLIP", "clip", "fit_prior", "logit", "out_of_fold", "pareto_shortlist"]

#: Predicted qualities are clipped to [PRIOR_CLIP, 1 − PRIOR_CLIP] before taking logits, so the
#: policy's input stays bounded and `sigmoid(logit(p))` gives back the clipped p exactly.
PRIOR_CLIP = 1e-3


def _build(family: str, params: dict[str, Any] | None) -> Router:
    if family not in ROUTERS:
        raise ValueError(f"unknown prior router family {family!r}; known: {sorted(ROUTERS)}")
    if family == "rl":
        raise ValueError("the RL router's prior must be a one-shot router, not 'rl'")
    router: Router = ROUTERS[family](**(params or {}))
    return router


def fit_prior(
    family: str, params: dict[str, Any] | None, data: RoutingData, embeddings: np.ndarray
) -> Router:
    """The one-shot router whose predictions the served policy reads."""
    return _build(family, params).fit(data, embeddings)


def clip(p: np.ndarray) -> np.ndarray:
    """`p` clipped to [PRIOR_CLIP, 1 − PRIOR_CLIP]."""
    return np.clip(np.asarray(p, dtype=np.float64), PRIOR_CLIP, 1.0 - PRIOR_CLIP)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)) of the clipped prediction."""
    q = clip(p)
    return np.asarray(np.log(q / (1.0 - q)))


def out_of_fold(
    family: str,
    params: dict[str, Any] | None,
    data: RoutingData,
    embeddings: np.ndarray,
    folds: int,
    seed: int,
) -> np.ndarray:
    """`(n, m)` predicted quality of each expert on each query of `data`, each query predicted
    by a router of `family` fitted without the fold it is in (clipped, see `PRIOR_CLIP`)."""
    n = len(data)
    k = max(2, min(folds, n))
    fold = np.random.default_rng(seed).permutation(n) % k
    out = np.zeros(data.scores.shape)
    for f in range(k):
        fit_rows, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        router = fit_prior(family, params, data.take(fit_rows), embeddings[fit_rows])
        out[held] = router.score(embeddings[held], [data.prompts[int(i)] for i in held])
    return clip(out)


def pareto_shortlist(scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """`(m,)` bool: the experts no other expert dominates on mean score and mean cost (on ties,
    the first of equal experts is kept)."""
    acc, cost = scores.mean(axis=0), costs.mean(axis=0)
    m = len(acc)
    keep = np.ones(m, dtype=bool)
    for j in range(m):
        for i in range(m):
            if i == j:
                continue
            at_least = acc[i] >= acc[j] and cost[i] <= cost[j]
            strictly = acc[i] > acc[j] or cost[i] < cost[j]
            if at_least and (strictly or i < j):
                keep[j] = False
                break
    return keep
