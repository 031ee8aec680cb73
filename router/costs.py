"""Predicted cost of each expert on a query, from what is known before calling it.

A decision may only use what the gateway knows at request time: the prompt (its token count) and
each expert's *expected* reply. The realised cost of the reply being evaluated is what a decision
is charged, never what it is made on (`training.evaluate` keeps the two apart).

`ReplyCostModel` splits a recorded cost into the prompt's part (prompt tokens × input price) and
the rest, the reply's part, and learns the reply's part per expert and per region of the query
embedding (k-means clusters, each cluster's mean shrunk toward the expert's global mean by
`shrink` pseudo-queries). Replies differ by 5× between models on the same question and by
subject (a chain of thought on algebra is longer than one on law), which a single assumed length
cannot express. Whatever the prompt count misses (a few-shot preamble the data does not show, a
tokenizer that counts differently) lands in the learned part, so the prediction stays unbiased.

Example::

    model = ReplyCostModel(n_clusters=60).fit(data, embeddings)
    usd = model.predict(query_embeddings, prompt_tokens)          # (n, m) predicted USD
    tokens = model.reply_tokens(query_embeddings)                 # (n, m) predicted reply tokens
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from router.data import RoutingData
from router.descriptor import ExpertDescriptor

__all__ = [
    "ReplyCostModel",
    "kmeans",
    "nearest_centroid",
    "prompt_token_estimate",
    "prompt_tokens_of",
    "reply_costs_of",
]


def prompt_token_estimate(prompts: Sequence[str]) -> np.ndarray:
    """A rough prompt token count (4 characters a token), as the gateway estimates one."""
    return np.array([max(1, len(p) // 4) for p in prompts], dtype=np.float64)


def kmeans(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Unit-norm centroids of `k` k-means clusters of `embeddings` (k is capped by the rows)."""
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings, dtype=np.float32)
    k = max(1, min(k, len(x)))
    fitted = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    centres = np.asarray(fitted.cluster_centers_, dtype=np.float32)
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    return np.asarray(centres / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def nearest_centroid(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the most cosine-similar centroid per row."""
    sim = np.asarray(embeddings, dtype=np.float32) @ centroids.T
    return np.asarray(sim.argmax(axis=1), dtype=np.int64)


def _group_means(values: np.ndarray, groups: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """`(k, m)` per-group column means of `values` (n, m), shrunk toward the column mean."""
    total = values.mean(axis=0)
    sums = np.zeros((k, values.shape[1]))
    np.add.at(sums, groups, values)
    counts = np.bincount(groups, minlength=k)[:, None].astype(np.float64)
    return np.asarray((sums + shrink * total) / (counts + shrink), dtype=np.float64)


class ReplyCostModel:
    """Per-expert predicted reply cost (USD), by embedding cluster; see the module docstring."""

    def __init__(self, n_clusters: int = 60, shrink: float = 10.0, seed: int = 0) -> None:
        self.n_clusters = n_clusters
        self.shrink = shrink
        self.seed = seed

    def fit(
        self,
        data: RoutingData,
        embeddings: np.ndarray | None,
        centroids: np.ndarray | None = None,
    ) -> Self:
        """Learn from `data.costs`; `embeddings[i]` embeds query i (None: one global mean per
        expert). `centroids` reuses a clustering (a router's own) instead of fitting one."""
        self.experts_ = _descriptors(data)
        reply = _reply_part(data.costs, prompt_tokens_of(data), self.experts_)
        if embeddings is None or len(embeddings) != len(data) or embeddings.shape[1] == 0:
            self.centroids_: np.ndarray | None = None
            self.table_ = reply.mean(axis=0)[None, :]
            return self
        self.centroids_ = (
            centroids
            if centroids is not None
            else kmeans(embeddings, min(self.n_clusters, max(1, len(data) // 20)), self.seed)
        )
        groups = nearest_centroid(embeddings, self.centroids_)
        self.table_ = _group_means(reply, groups, len(self.centroids_), self.shrink)
        return self

    def _rows(self, embeddings: np.ndarray | None, n: int) -> np.ndarray:
        if self.centroids_ is None or embeddings is None or embeddings.shape[-1] == 0:
            return np.zeros(n, dtype=np.int64)
        return nearest_centroid(embeddings, self.centroids_)

    def reply_cost(self, embeddings: np.ndarray | None, n: int) -> np.ndarray:
        """`(n, m)` predicted USD of each expert's reply (prompt excluded)."""
        return np.asarray(self.table_[self._rows(embeddings, n)], dtype=np.float64)

    def predict(self, embeddings: np.ndarray | None, prompt_tokens: np.ndarray) -> np.ndarray:
        """`(n, m)` predicted USD: prompt tokens × input price + the expected reply's cost."""
        tokens = np.asarray(prompt_tokens, dtype=np.float64)
        inputs = np.array([e.input_price for e in self.experts_]) / 1e6
        prompt_part = tokens[:, None] * inputs[None, :]
        return np.asarray(prompt_part + self.reply_cost(embeddings, len(tokens)), dtype=np.float64)

    def reply_tokens(self, embeddings: np.ndarray | None, n: int) -> np.ndarray:
        """`(n, m)` predicted reply tokens (0 for an expert whose output price is 0)."""
        out = self._output_prices()
        usd = self.reply_cost(embeddings, n)
        return np.where(out > 0, usd / np.where(out > 0, out, 1.0), 0.0)

    def _output_prices(self) -> np.ndarray:
        """USD per output token per expert, built once (this runs on every routed request);
        rebuilt when `experts_` is another list (an artifact's pool changed after loading)."""
        cached = getattr(self, "_out_prices", None)
        if cached is None or cached[0] is not self.experts_:
            prices = np.array([e.output_price for e in self.experts_]) / 1e6
            cached = self._out_prices = (self.experts_, prices)
        return cached[1]

    def add_expert(
        self, data: RoutingData, column: int, embeddings: np.ndarray | None
    ) -> ReplyCostModel:
        """A copy that also predicts `data.models[column]`, learned from `data`'s few queries
        (each cluster shrunk toward the new expert's own mean)."""
        expert = _descriptors(data)[column]
        reply = _reply_part(data.costs[:, [column]], prompt_tokens_of(data), [expert])  # (n, 1)
        k = len(self.table_)
        rows = self._rows(embeddings, len(data))
        column_table = _group_means(reply, rows, k, self.shrink)
        new = ReplyCostModel(self.n_clusters, self.shrink, self.seed)
        new.experts_ = [*self.experts_, expert]
        new.centroids_ = self.centroids_
        new.table_ = np.concatenate([self.table_, column_table], axis=1)
        return new


def _descriptors(data: RoutingData) -> list[ExpertDescriptor]:
    if len(data.experts) == len(data.models):
        return list(data.experts)
    return [ExpertDescriptor(m, 0.0, 0.0) for m in data.models]


def prompt_tokens_of(data: RoutingData) -> np.ndarray:
    """`data.prompt_tokens`, or a 4-characters-a-token estimate where it has none."""
    if data.prompt_tokens is not None:
        return np.asarray(data.prompt_tokens, dtype=np.float64)
    return prompt_token_estimate(data.prompts)


def reply_costs_of(data: RoutingData) -> np.ndarray:
    """`(n, m)` what each recorded cost of `data` leaves after the prompt's part: the replies'."""
    return _reply_part(data.costs, prompt_tokens_of(data), _descriptors(data))


def _reply_part(
    costs: np.ndarray, prompt_tokens: np.ndarray, experts: Sequence[ExpertDescriptor]
) -> np.ndarray:
    """What each recorded cost leaves after the prompt's part (never below 0)."""
    inputs = np.array([e.input_price for e in experts]) / 1e6
    return np.maximum(costs - prompt_tokens[:, None] * inputs[None, :], 0.0)
