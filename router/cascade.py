"""A learned cascade: call the cheapest expert the router trusts, stop when the answer looks right.

FrugalGPT and AutoMix escalate from a cheap model to a dearer one when a scorer says the cheap
answer is unreliable. Here, per query:

1. **The chain** (`chain`): the experts the profile trusts (predicted quality ≥ `trust` × the
   query's best), cheapest first, at most `max_calls`, the router's best-predicted expert
   always among them. Cheap experts that agree are strong evidence, so the chain does not ask
   each next expert to be predicted better than the last.
2. **The answer so far** is the weighted vote of the replies called (`router.vote.leader`):
   after one call it is that reply; after two that agree it is their shared conclusion.
3. **The stop rule** (`StopRule`): after each call, a logistic regression per step estimates
   the probability that the answer so far is right from what the gateway can see
   (`STOP_FEATURES`: the answer's share of the vote and how many replies agree, whether it ends
   with a final-answer marker, its length, the router's predicted quality of who gave it and of
   the next expert in the chain). The cascade stops once that probability reaches `threshold`,
   or when the chain ends.

The rule is fitted on training episodes only (`training.strategies` simulates them from recorded
replies, with the router's quality predicted out of fold so it is no better than on new queries).

Example::

    links = chain(quality, est_cost, trust=0.8, max_calls=3)      # (b, L), −1 padded
    p = rule.predict(step, stop_features(seen, weights, quality, links, step)[0])
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

__all__ = ["STOP_FEATURES", "StopRule", "chain", "stop_features"]

STOP_FEATURES = (
    "share",
    "agree",
    "agree_2plus",
    "marked",
    "length",
    "quality",
    "best_called_quality",
    "next_quality",
)


def chain(quality: np.ndarray, est_cost: np.ndarray, trust: float, max_calls: int) -> np.ndarray:
    """`(b, max_calls)` expert indices to call in order per query, −1 padded (see module).

    `quality` `(b, m)` is predicted; `est_cost` `(b, m)` or `(m,)` predicted USD per call. The
    chain is the trusted experts cheapest first (equal cost: better first), cut to its first
    `max_calls − 1`, then the best-predicted expert (if not already in).
    """
    quality = np.asarray(quality, dtype=np.float64)
    cost = np.broadcast_to(np.asarray(est_cost, dtype=np.float64), quality.shape)
    out = np.full((len(quality), max_calls), -1, dtype=np.int64)
    for i, (q, c) in enumerate(zip(quality, cost, strict=True)):
        best = int(np.argmax(q))
        trusted = [int(j) for j in np.lexsort((-q, c)) if q[j] >= trust * q[best] - 1e-12]
        links = [*[j for j in trusted if j != best][: max_calls - 1], best]
        links.sort(key=lambda j: (c[j], -q[j]))
        out[i, : len(links)] = links
    return out


def stop_features(
    keys: np.ndarray,
    marked: np.ndarray,
    length: np.ndarray,
    weights: np.ndarray,
    quality: np.ndarray,
    links: np.ndarray,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`(features (b, len(STOP_FEATURES)), answer (b,))` after the call at position `step` of
    each chain; `keys` are the replies seen (negative where not called or no conclusion)."""
    from router.vote import leader

    winner, share, agree = leader(keys, weights, quality)
    rows = np.arange(len(keys))
    w = np.maximum(winner, 0)
    has = winner >= 0
    called = keys > -2
    nxt = links[:, step + 1] if step + 1 < links.shape[1] else np.full(len(keys), -1)
    next_q = np.where(nxt >= 0, quality[rows, np.maximum(nxt, 0)], 0.0)
    features = np.stack(
        [
            share,
            agree / np.maximum(called.sum(axis=1), 1),
            (agree >= 2).astype(np.float64),
            np.where(has, marked[rows, w], 0.0),
            np.where(has, length[rows, w], 0.0),
            np.where(has, quality[rows, w], 0.0),
            np.where(called, quality, 0.0).max(axis=1),
            next_q,
        ],
        axis=1,
    )
    return features, winner


class StopRule:
    """P(the answer so far is right | stop features), one logistic regression per step.

    Steps past the last fitted one use the last model; a step whose training labels were all
    one class predicts that class's rate.
    """

    def __init__(self, c: float = 1.0) -> None:
        self.c = c

    def fit(self, features: list[np.ndarray], correct: list[np.ndarray]) -> Self:
        """`features[t]` `(n_t, f)` and `correct[t]` `(n_t,)` in {0, 1}: episodes at step t."""
        from sklearn.linear_model import LogisticRegression

        self.models_: list[Any] = []
        for x, y in zip(features, correct, strict=True):
            y = (np.asarray(y) >= 0.5).astype(int)
            if len(np.unique(y)) < 2:
                self.models_.append(float(y.mean()) if len(y) else 0.5)
                continue
            self.models_.append(LogisticRegression(C=self.c, max_iter=1000).fit(x, y))
        return self

    def predict(self, step: int, features: np.ndarray) -> np.ndarray:
        """`(b,)` probability that the answer so far is right after the call at `step`."""
        model = self.models_[min(step, len(self.models_) - 1)]
        if isinstance(model, float):
            return np.full(len(features), model)
        return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)
