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
    `prompt_tokens[i]` (optional) counts query i's prompt tokens with the tokenizer its costs
    were estimated with; without it a cost model estimates 4 characters a token.
    """

    query_ids: Sequence[str]
    prompts: Sequence[str]
    tasks: Sequence[str | None]
    models: Sequence[str]
    scores: np.ndarray
    costs: np.ndarray
    experts: Sequence[ExpertDescriptor] = ()
    responses: np.ndarray | None = None
    prompt_tokens: np.ndarray | None = None

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
        if self.prompt_tokens is not None and len(self.prompt_tokens) != n:
            raise ValueError(f"{len(self.prompt_tokens)} prompt token counts for {n} queries")

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, rows: np.ndarray) -> RoutingData:
        """The queries `rows` (indices), in that order, with everything recorded about them."""
        return RoutingData(
            query_ids=[self.query_ids[i] for i in rows],
            prompts=[self.prompts[i] for i in rows],
            tasks=[self.tasks[i] for i in rows],
            models=self.models,
            scores=self.scores[rows],
            costs=self.costs[rows],
            experts=self.experts,
            responses=None if self.responses is None else self.responses[rows],
            prompt_tokens=None if self.prompt_tokens is None else self.prompt_tokens[rows],
        )
