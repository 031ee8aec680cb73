"""The router interface: predict each expert's quality on each query.

A router has the scikit-learn estimator shape: `__init__` stores hyperparameters only; `fit`
learns from a `RoutingData` and sets trailing-underscore attributes; `score` is the one abstract
method. `models_` fixes the column order of `score`, and `experts_` records the pool (names and
prices) the router was trained for, so a router is never silently used against another pool.

Example::

    router = ROUTERS["cheapest"]().fit_pool(experts)
    quality = router.score(embeddings, ["What is 2+2?"])   # shape (1, len(router.models_))
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from router.costs import ReplyCostModel
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.embedder import EmbedderRecord

__all__ = ["ASSUMED_REPLY_TOKENS", "ROUTERS", "PoolMismatchError", "Router", "register"]


#: Reply length a router without a cost model assumes for every expert.
ASSUMED_REPLY_TOKENS = 256


class PoolMismatchError(ValueError):
    """A trained router was asked to route for experts it was not trained on."""


class Router(ABC):
    """Predicted quality per (query, expert)."""

    #: Registry name, as used by `coe train --router NAME` and `"coe": {"router": NAME}`.
    name: ClassVar[str]
    #: False for routers whose scores ignore the query (baselines): the gateway skips embedding.
    uses_embeddings: ClassVar[bool] = True

    models_: list[str]
    experts_: list[ExpertDescriptor]
    #: Mean over training queries of the dearest expert's cost (USD): a global `Policy`
    #: `cost_scale` under which `cost_weight` keeps its unit-free meaning. None without data.
    cost_scale_: float | None = None
    #: Predicted cost per (query, expert) from request-time knowledge (`router.costs`); None
    #: for a router set up without data, which then assumes `ASSUMED_REPLY_TOKENS` per reply.
    cost_model_: ReplyCostModel | None = None
    #: Set by `coe train --router auto` (`training.auto`): the family and parameters chosen by
    #: cross-validation on the training file, and the CV table. None for a family fitted as named.
    selection_: dict[str, Any] | None = None
    #: The embedder that made the training vectors, set by `coe train` (and kept by
    #: `coe train --base --add`); the gateway embeds queries with it. None for a router that
    #: reads no embedding, one fitted outside `coe train`, or an artifact from before it was
    #: recorded (the class default is what such a pickle loads with).
    embedder_: EmbedderRecord | None = None

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        """Learn from outcomes on `data`; `embeddings[i]` embeds `data.prompts[i]`.

        Subclasses call this first: it records the pool and checks the inputs agree.
        """
        if self.uses_embeddings and len(embeddings) != len(data):
            raise ValueError(
                f"{len(embeddings)} embeddings for {len(data)} queries: embed data.prompts"
            )
        if len(data) == 0:
            raise ValueError("cannot fit a router on an empty dataset")
        self.models_ = list(data.models)
        self.experts_ = list(data.experts)
        self.cost_scale_ = float(data.costs.max(axis=1).mean())
        usable = embeddings if self.uses_embeddings else None
        self.cost_model_ = ReplyCostModel(seed=0).fit(data, usable)
        return self

    def fit_pool(self, experts: Sequence[ExpertDescriptor]) -> Self:
        """Set up a router that needs no outcomes (a baseline) for a live pool."""
        self.models_ = [e.name for e in experts]
        self.experts_ = list(experts)
        return self

    @abstractmethod
    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        """Predicted quality in [0, 1], shape `(len(queries), len(self.models_))`."""

    def predicted_costs(self, embeddings: np.ndarray, prompt_tokens: np.ndarray) -> np.ndarray:
        """`(n, len(models_))` USD each expert is expected to cost on each query, from the
        prompt's token count and the expert's predicted reply (never the realised one)."""
        tokens = np.asarray(prompt_tokens, dtype=np.float64)
        if self.cost_model_ is not None:
            return self.cost_model_.predict(embeddings, tokens)
        return np.array(
            [[e.cost_usd(t, ASSUMED_REPLY_TOKENS) for e in self.experts_] for t in tokens]
        ).reshape(len(tokens), len(self.experts_))

    def check_pool(self, experts: Sequence[ExpertDescriptor]) -> None:
        """Refuse a pool that lacks an expert this router was trained to score."""
        names = {e.name for e in experts}
        missing = [m for m in self.models_ if m not in names]
        if missing:
            raise PoolMismatchError(
                f"router {self.name!r} was trained for experts {self.models_}, but the pool has "
                f"no {missing}; retrain it on this pool (`coe train`) or use a matching pool file"
            )

    def save(self, path: str | Path) -> None:
        """Write the fitted router to `path` (a pickle with the router's name and pool)."""
        payload: dict[str, Any] = {"format": 1, "name": self.name, "router": self}
        Path(path).write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def load(cls, path: str | Path) -> Router:
        """Read a router written by `save`. Only load files you trust (pickle)."""
        payload = pickle.loads(Path(path).read_bytes())
        if not isinstance(payload, dict) or not isinstance(payload.get("router"), Router):
            raise ValueError(f"{path}: not a coe router artifact")
        router: Router = payload["router"]
        if not isinstance(router, cls):
            raise ValueError(f"{path}: holds a {type(router).__name__}, not a {cls.__name__}")
        return router


ROUTERS: dict[str, type[Router]] = {}


def register(cls: type[Router]) -> type[Router]:
    """Class decorator adding a router family to `ROUTERS` under its `name`."""
    ROUTERS[cls.name] = cls
    return cls
