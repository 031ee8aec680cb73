"""Routing: embed a query, predict each expert's quality, and turn the predictions into a plan.

`router` sees experts only as `ExpertDescriptor`s (name, prices, context, skills); it never
imports `experts`, `api` or `training`. Importing it fills `ROUTERS` with every family; none of
them imports torch or scikit-learn until it is fitted or used.
"""

from router import (
    baselines,
    category,
    chains,
    classifier,
    cluster,
    ensemble,
    irt,
    knn,
    mf,
    rl,
    skills,
    stack,
)
from router.base import ROUTERS, PoolMismatchError, Router, register

__all__ = [
    "ROUTERS",
    "PoolMismatchError",
    "Router",
    "baselines",
    "category",
    "chains",
    "classifier",
    "cluster",
    "ensemble",
    "irt",
    "knn",
    "mf",
    "register",
    "rl",
    "skills",
    "stack",
]
