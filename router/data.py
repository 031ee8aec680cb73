"""The in-memory form of a routing dataset that routers fit on.

`training/` reads canonical files (one row per query × model) and pivots them into this shape;
routers never see files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.descriptor import ExpertDescriptor

__all__ = ["RoutingData"]


@dataclass(frozen=True)
class RoutingData:
    """Outcomes of `len(models)` models on `len(prompts)` queries.

    `scores[i, j]` is model j's quality on query i in [0, 1]; `costs[i, j]` its cost in USD.
    `tasks[i]` is the query's task or subject label, or None where the source has none.
    `responses[i, j]` (optional, an object array) is model j's answer text to query i, None
    where the source recorded none; the RL router derives answer features from it.
    """

    query_ids: Sequence[str]
    prompts: Sequence[str]
    tasks: Sequence[str | None]
    models: Sequence[str]
    scores: np.ndarray
    costs: np.ndarray
    experts: Sequence[ExpertDescriptor] = ()
    responses: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        if self.scores.shape != (n, m) or self.costs.shape != (n, m):
            raise ValueError(
                f"scores {self.scores.shape} and costs {self.costs.shape} must both be ({n}, {m})"
            )
        if len(self.query_ids) != n or len(self.tasks) != n:
            raise ValueError("query_ids, prompts and tasks must have one entry per query")
        if self.responses is not None and self.responses.shape != (n, m):
            raise ValueError(f"responses {self.responses.shape} must be ({n}, {m})")

    def __len__(self) -> int:
        return len(self.prompts)
