"""`coe calibrate`: the cost_weight λ that meets a target on held-out data (RouteLLM-style).

Targets are relative to the strongest single model on the held-out data (highest accuracy,
cheapest on ties):

- `cost_share=s`: the most accurate operating point whose mean cost is ≤ s × the strongest
  model's mean cost (the smallest such λ);
- `quality_share=q`: the cheapest operating point whose accuracy is ≥ q × the strongest model's
  accuracy (the largest such λ).

The λ is meant for the router's own `cost_scale_` (`Policy(cost_weight=λ,
cost_scale=router.cost_scale_)`), which is how it was swept here. Calibrate on data the router was
not trained on, and not on the data you report results for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from router.base import Router
from router.data import RoutingData
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts
from training.errors import CoeTrainingError
from training.evaluate import COST_WEIGHTS, sweep

__all__ = ["calibrate", "calibrate_file"]


def calibrate(
    router: Router,
    data: RoutingData,
    quality: np.ndarray,
    cost_share: float | None = None,
    quality_share: float | None = None,
) -> dict[str, Any]:
    """The chosen λ and what it achieves on `data`; `quality` is `router.score(...)` on it."""
    scale = router.cost_scale_ or float(data.costs.max(axis=1).mean())
    curve, _ = sweep(quality, data, scale, COST_WEIGHTS)
    acc, cost = data.scores.mean(axis=0), data.costs.mean(axis=0)
    strong = int(np.lexsort((cost, -acc))[0])
    if cost_share is not None:
        ok = [p for p in curve if p[0] <= cost_share * cost[strong] * (1 + 1e-9)]
        pick = max(ok, key=lambda p: (p[1], -p[2])) if ok else None
        target = f"mean cost ≤ {cost_share:.3g} × {data.models[strong]}'s"
    elif quality_share is not None:
        ok = [p for p in curve if p[1] >= quality_share * acc[strong] - 1e-9]
        pick = min(ok, key=lambda p: (p[0], -p[2])) if ok else None
        target = f"accuracy ≥ {quality_share:.3g} × {data.models[strong]}'s"
    else:
        raise CoeTrainingError("give a cost share or a quality share to calibrate for")
    if pick is None:
        raise CoeTrainingError(f"no cost_weight reaches {target} on this data; relax the target")
    return {
        "cost_weight": pick[2],
        "cost_scale_usd": scale,
        "target": target,
        "accuracy": pick[1],
        "mean_cost_usd": pick[0],
        "cost_share_of_strongest": pick[0] / cost[strong] if cost[strong] > 0 else None,
        "quality_share_of_strongest": pick[1] / acc[strong] if acc[strong] > 0 else None,
        "strongest": data.models[strong],
    }


def calibrate_file(
    router_file: Path,
    data_file: Path,
    cost_share: float | None,
    quality_share: float | None,
    cache_dir: Path | None,
) -> dict[str, Any]:
    """Load a router artifact and a canonical file, then `calibrate`."""
    try:
        router = Router.load(router_file)
    except (OSError, ValueError) as exc:
        raise CoeTrainingError(f"{router_file}: cannot load a router: {exc}") from exc
    data = to_routing_data(read_dataset(data_file), data_file, models=router.models_)
    embeddings = (
        embed_prompts(data.prompts, cache_dir=cache_dir) if router.uses_embeddings else None
    )
    quality = router.score(
        embeddings if embeddings is not None else np.zeros((len(data), 0)), data.prompts
    )
    return calibrate(router, data, quality, cost_share, quality_share)
