"""The policy: turn predicted quality and estimated cost into a ranked list of experts.

Utility of expert j on a query is `quality_j − cost_weight · cost_j / scale`:

- with `cost_scale=None` (the default) `scale` is the dearest candidate's estimated cost for
  this query, so `cost_weight` is unit-free and the same knob means the same trade-off on a short
  and a long prompt ("1.0: the dearest expert's price is worth one whole point of quality");
- with a fixed `cost_scale` (USD) the trade-off is global: a USD costs the same utility on every
  query. For a mean-cost budget this is the Lagrangian optimum (dear, long prompts go to cheap
  experts first), which is why `coe eval` sweeps it and trained routers record a scale
  (`Router.cost_scale_`, the mean over training queries of the dearest expert's cost).

Experts whose estimated cost exceeds `max_cost_usd` are dropped; unavailable experts go last, in
utility order, so a request can still fall back to them when nothing else answers. Ties break
toward the cheaper expert.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Decision", "Policy", "choose", "utilities"]


@dataclass(frozen=True)
class Decision:
    """A ranked choice: `ranked[0]` is the expert to call first."""

    ranked: list[str]
    utility: dict[str, float]
    excluded: dict[str, str]


def utilities(
    quality: np.ndarray, cost_usd: np.ndarray, cost_weight: float, cost_scale: float | None = None
) -> np.ndarray:
    """Utility per (query, expert) for arrays of shape `(n, m)` (or `(m,)` for one query)."""
    if cost_scale is not None and cost_scale > 0:
        scale: np.ndarray | float = cost_scale
    else:
        dearest = cost_usd.max(axis=-1, keepdims=True)
        scale = np.where(dearest > 0, dearest, 1.0)
    return np.asarray(quality - cost_weight * cost_usd / scale, dtype=np.float64)


def choose(
    quality: np.ndarray, cost_usd: np.ndarray, cost_weight: float, cost_scale: float | None = None
) -> np.ndarray:
    """The index of the top expert per query (rows of `(n, m)` arrays), as `Policy.decide` ranks.

    Vectorised for evaluation sweeps; ties go to the cheaper expert, then the lower index.
    """
    utility = utilities(quality, cost_usd, cost_weight, cost_scale)
    best = utility.max(axis=1, keepdims=True)
    tied = utility >= best - 1e-12
    masked_cost = np.where(tied, cost_usd, np.inf)
    return np.asarray(masked_cost.argmin(axis=1), dtype=np.int64)


@dataclass(frozen=True)
class Policy:
    """Ranks experts by `quality − cost_weight · cost / scale` (see the module docstring)."""

    cost_weight: float = 0.0
    cost_scale: float | None = None

    def decide(
        self,
        models: Sequence[str],
        quality: np.ndarray,
        cost_usd: np.ndarray,
        *,
        cost_weight: float | None = None,
        max_cost_usd: float | None = None,
        unavailable: Collection[str] = (),
    ) -> Decision:
        """Rank `models` for one query; `quality` and `cost_usd` align with `models`."""
        weight = self.cost_weight if cost_weight is None else cost_weight
        if len(models) == 0:
            return Decision(ranked=[], utility={}, excluded={})
        utility = utilities(
            np.asarray(quality, dtype=np.float64),
            np.asarray(cost_usd, dtype=np.float64),
            weight,
            self.cost_scale,
        )
        excluded: dict[str, str] = {}
        keep = []
        for j, name in enumerate(models):
            if max_cost_usd is not None and cost_usd[j] > max_cost_usd:
                excluded[name] = f"estimated cost {cost_usd[j]:.3g} USD > max_cost_usd"
            else:
                keep.append(j)
        order = sorted(keep, key=lambda j: (models[j] in unavailable, -utility[j], cost_usd[j]))
        return Decision(
            ranked=[models[j] for j in order],
            utility={models[j]: float(utility[j]) for j in range(len(models))},
            excluded=excluded,
        )
