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

Load-aware routing (LLEP-style least-loaded rerouting): given the live load of each expert
(`router.load.ExpertLoad`), when the preferred expert is saturated (every slot busy and calls
already queued) or asleep, the policy may move to the front another available expert whose
utility is within `load_tolerance` of the best: a resident one with the least work ahead of the
call or, when every such candidate sleeps, the one whose batch is already forming (most queued),
so the call joins a wake that will happen anyway. Nothing changes while the preferred expert can
take the call now, so light traffic routes exactly as without load.

Why this and not ALF-LB's per-expert bias (DeepSeek's auxiliary-loss-free balancing): a bias
updated toward a target load shifts routing all the time, including when nothing is overloaded,
and needs a target share per expert that a pool of unequal experts does not have; its quality
cost is unbounded per request. Rerouting acts only under pressure and gives up at most
`load_tolerance` of utility on any request — a bound an operator can state. The default tolerance
(0.05, `COE_LOAD_TOLERANCE`) is five points of predicted quality: small against the spread
between good and weak experts in the benchmark data, large enough to swap near-equivalent
experts, which is where waiting for a wake or a queue costs more than the quality difference.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router.load import ExpertLoad

__all__ = ["Decision", "Policy", "choose", "reroute", "utilities"]


@dataclass(frozen=True)
class Decision:
    """A ranked choice: `ranked[0]` is the expert to call first."""

    ranked: list[str]
    utility: dict[str, float]
    excluded: dict[str, str]
    #: the expert the load moved the call away from (None: no rerouting)
    rerouted_from: str | None = None


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
    load_tolerance: float = 0.0

    def decide(
        self,
        models: Sequence[str],
        quality: Sequence[float] | np.ndarray,
        cost_usd: Sequence[float] | np.ndarray,
        *,
        cost_weight: float | None = None,
        max_cost_usd: float | None = None,
        unavailable: Collection[str] = (),
        load: Mapping[str, ExpertLoad] | None = None,
    ) -> Decision:
        """Rank `models` for one query; `quality` and `cost_usd` align with `models`; with `load`,
        reroute away from a saturated or asleep first choice (see the module docstring)."""
        weight = self.cost_weight if cost_weight is None else cost_weight
        if len(models) == 0:
            return Decision(ranked=[], utility={}, excluded={})
        # One query's few experts: plain floats, the same IEEE arithmetic as `utilities` (its
        # numpy calls on arrays this small cost more than the ranking itself, on every request).
        costs = [float(c) for c in cost_usd]
        scale = self.cost_scale
        if scale is None or not scale > 0:
            dearest = max(costs)
            scale = dearest if dearest > 0 else 1.0
        utility = [float(q) - weight * c / scale for q, c in zip(quality, costs, strict=True)]
        excluded: dict[str, str] = {}
        keep = []
        for j, name in enumerate(models):
            if max_cost_usd is not None and costs[j] > max_cost_usd:
                excluded[name] = f"estimated cost {costs[j]:.3g} USD > max_cost_usd"
            else:
                keep.append(j)
        order = sorted(keep, key=lambda j: (models[j] in unavailable, -utility[j], costs[j]))
        ranked = [models[j] for j in order]
        scores = dict(zip(models, utility, strict=True))
        moved = None
        if load:
            ranked, moved = reroute(ranked, scores, load, self.load_tolerance, unavailable)
        return Decision(ranked=ranked, utility=scores, excluded=excluded, rerouted_from=moved)


def reroute(
    ranked: list[str],
    utility: Mapping[str, float],
    load: Mapping[str, ExpertLoad],
    tolerance: float,
    unavailable: Collection[str] = (),
) -> tuple[list[str], str | None]:
    """Least-loaded rerouting within `tolerance` of the best utility.

    Returns the new ranking and the expert moved away from (None when the first choice stays).
    """
    if not ranked or ranked[0] in unavailable or ranked[0] not in load:
        return ranked, None
    first = load[ranked[0]]
    if first.resident and not first.saturated:
        return ranked, None
    floor = utility[ranked[0]] - tolerance
    near = [m for m in ranked if m in load and m not in unavailable and utility[m] >= floor - 1e-12]

    def wait(name: str) -> tuple[int, float]:
        state = load[name]
        # resident first, least work ahead; among sleepers, join the batch already forming
        return (0, state.pressure) if state.resident else (1, -float(state.queued))

    best = min(near, key=lambda m: (wait(m), near.index(m)))
    if best == ranked[0] or wait(best) >= wait(ranked[0]):
        return ranked, None
    return [best, *(m for m in ranked if m != best)], ranked[0]
