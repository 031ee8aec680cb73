"""Weighted voting over experts' conclusions, and recruiting the voters (Symbolic-MoE style).

Symbolic-MoE recruits, per query, the experts whose profile is strongest on the query's skills,
and combines their answers. Here the profile is any router's predicted quality `q[j]` (the
`skills` router's per-cluster accuracies by default) and the answers are combined by a vote in
which each expert counts by its reliability on this query: an expert right with probability p,
choosing among N possible answers, carries the naive-Bayes weight `log(p (N−1) / (1 − p))`
(so a vote of independent experts is the most probable answer). Ties go to the stronger expert.

Everything is batched over `b` queries and `m` experts; keys are integer codes of the experts'
conclusions (equal codes: equal answers), negative where an expert gave none or was not asked.

Example::

    w = vote_weights(q, n_options=10)               # (b, m)
    winner, support, agree = leader(keys, w, q)     # the answer's expert, its vote share, its votes
"""

from __future__ import annotations

import numpy as np

__all__ = ["OPEN_ANSWERS", "leader", "recruit", "vote_weights"]

#: How many wrong answers an open question (a number) is taken to spread over when serving.
OPEN_ANSWERS = 1000.0

#: Predicted quality is clipped to this range before it becomes a weight.
_CLIP = (0.02, 0.98)


def vote_weights(quality: np.ndarray, n_options: float | np.ndarray = 1000.0) -> np.ndarray:
    """Naive-Bayes weight of each expert's vote, `log(p (N−1) / (1 − p))`, floored at 1e-3.

    `n_options` is the number of answers a wrong expert spreads over: 10 for MMLU-Pro's
    options; large for open answers (a number), where agreeing by chance is rare. It may be an
    array broadcasting against `quality` (e.g. `(b, 1)`, one per query).
    """
    p = np.clip(np.asarray(quality, dtype=np.float64), *_CLIP)
    spread = np.maximum(np.asarray(n_options, dtype=np.float64) - 1.0, 1.0)
    w = np.log(p * spread / (1.0 - p))
    return np.asarray(np.maximum(w, 1e-3), dtype=np.float64)


def recruit(utility: np.ndarray, k: int) -> np.ndarray:
    """`(b, k)` indices of the k experts of highest utility per query, best first (ties: the
    lower index, i.e. a stable order)."""
    order = np.argsort(-np.asarray(utility, dtype=np.float64), axis=1, kind="stable")
    return np.asarray(order[:, :k], dtype=np.int64)


def leader(
    keys: np.ndarray, weights: np.ndarray, quality: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The winning answer of each query's vote among the experts whose key is ≥ 0.

    Returns `(winner, share, agree)`, each `(b,)`: the expert whose reply is the answer (the
    strongest by `quality` among those who gave the winning conclusion; −1 when nobody
    concluded anything), the winning conclusion's share of the total vote weight, and how many
    experts gave it.
    """
    keys = np.asarray(keys)
    voted = keys >= 0
    w = np.where(voted, weights, 0.0)
    same = (keys[:, :, None] == keys[:, None, :]) & voted[:, :, None] & voted[:, None, :]
    support = np.einsum("bjl,bl->bj", same.astype(np.float64), w)
    agree = same.sum(axis=2)
    # the conclusion with most support; among its experts the strongest; ties to the stronger
    rank = np.where(voted, support + 1e-9 * np.asarray(quality, dtype=np.float64), -np.inf)
    winner = np.argmax(rank, axis=1)
    rows = np.arange(len(keys))
    total = w.sum(axis=1)
    has = voted.any(axis=1)
    share = np.where(has, support[rows, winner] / np.where(total > 0, total, 1.0), 0.0)
    return (
        np.where(has, winner, -1).astype(np.int64),
        share,
        np.where(has, agree[rows, winner], 0).astype(np.int64),
    )
