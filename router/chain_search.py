"""Searching agreement chains on training replies: every candidate simulated at once, in numpy.

An agreement chain (`router.chains`) calls its experts in order and stops as soon as the
latest reply's conclusion is shared by `k` of the replies called (k = 1: the first reply that
concludes anything; k = 2: the first two that agree); if the chain ends first it answers with
the last reply if that concludes anything, else the most reliable reply that does.
Whether it pays depends on how the members' errors correlate (two cheap experts that agree
are rarely both wrong), which no per-expert accuracy shows, so the chain is chosen by
simulating candidates on the training replies:

- `candidates(m, max_len)`: singles, and every k = 2 chain of 2–`max_len` distinct experts (the
  first two unordered: they are both called before anything can stop), plus k = 1 pairs (the
  second called only when the first concludes nothing).
- `simulate(...)`: `(n, N)` score and cost of every candidate on every training query, exactly
  as `router.chains.ChainEpisode` would run it (a test holds them equal), in blocks of columns.
- `fold_totals(...)`: per-fold sums, so that choosing on some folds and scoring on the others
  (`choose`) costs nothing more: the K-fold estimate of the whole selection procedure, the
  argmax over thousands of chains included, is what `router.chains` uses to pick the
  procedure's own knobs (the candidate family) and what it reports as "train-CV".

Example::

    chains, ks = candidates(m=20, max_len=4)
    score, cost = fold_totals(keys, scores, costs, reliability, chains, ks, folds)
    best = choose(score[train_folds].sum(0), cost[train_folds].sum(0), n_train, budget)
"""

from __future__ import annotations

from itertools import combinations, permutations

import numpy as np

__all__ = ["candidates", "choose", "fold_totals", "simulate"]

#: Candidate columns simulated at once (bounds the `(n, block)` working arrays).
BLOCK = 2048


def candidates(
    m: int, max_len: int, reliability: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`(chains (N, max_len) −1 padded, ks (N,))`: the candidate chains over `m` experts.

    With `reliability` `(m,)`, a k = 2 chain escalates only to experts more reliable than every
    expert before it (far fewer free choices: the escalation is to someone stronger).
    """
    rows: list[tuple[int, ...]] = [(j,) for j in range(m)]
    ks = [1] * m
    pairs = list(permutations(range(m), 2))
    rows += pairs
    ks += [1] * len(pairs)
    for length in range(2, max_len + 1):
        for a, b in combinations(range(m), 2):
            rest = [j for j in range(m) if j not in (a, b)]
            for tail in permutations(rest, length - 2):
                if reliability is not None and not _rising(reliability, (a, b, *tail)):
                    continue
                rows.append((a, b, *tail))
                ks.append(2)
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, np.asarray(ks, dtype=np.int64)


def _rising(reliability: np.ndarray, chain: tuple[int, ...]) -> bool:
    floor = max(reliability[chain[0]], reliability[chain[1]])
    for j in chain[2:]:
        if reliability[j] <= floor:
            return False
        floor = reliability[j]
    return True


def _block(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    reliability: np.ndarray,
    chains: np.ndarray,
    ks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    n, width = len(keys), chains.shape[1]
    shape = (n, len(chains))
    done = np.zeros(shape, dtype=bool)
    spent, got = np.zeros(shape), np.zeros(shape)
    last, last_valid = np.zeros(shape), np.zeros(shape, dtype=bool)
    rank, fallback = np.full(shape, -np.inf), np.zeros(shape)  # most reliable concluding reply
    earlier: list[np.ndarray] = []
    for t in range(width):
        e = chains[:, t]
        on = ~done & (e >= 0)[None, :]
        col = np.maximum(e, 0)
        key, score = keys[:, col], scores[:, col]
        valid = key >= 0
        spent += np.where(on, costs[:, col], 0.0)
        votes = 1 + sum((prev == key).astype(np.int64) for prev in earlier)
        stop = on & valid & (votes >= ks[None, :])
        got = np.where(stop, score, got)
        last = np.where(on, score, last)
        last_valid = np.where(on, valid, last_valid)
        better = on & valid & (reliability[col][None, :] > rank)
        rank = np.where(better, reliability[col][None, :], rank)
        fallback = np.where(better, score, fallback)
        # a reply not called (or concluding nothing) never matches a later one
        earlier.append(np.where(on & valid, key, -3 - t))
        done |= stop
    ended = np.where(last_valid | np.isinf(rank), last, fallback)
    return np.where(done, got, ended), spent


def simulate(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    reliability: np.ndarray,
    chains: np.ndarray,
    ks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`(score, cost)`, each `(n, N)`: every chain run on every query of the recorded `(n, m)`
    replies (`keys`: conclusion codes, negative where none), `reliability` `(m,)` ranking the
    fallback answer."""
    parts = [
        _block(keys, scores, costs, reliability, chains[i : i + BLOCK], ks[i : i + BLOCK])
        for i in range(0, len(chains), BLOCK)
    ]
    return np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)


def fold_totals(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    reliability: np.ndarray,
    chains: np.ndarray,
    ks: np.ndarray,
    folds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`(score, cost)` summed per fold, each `(F, N)`; `folds[i]` is query i's fold in 0..F−1."""
    n_folds = int(folds.max()) + 1
    onehot = np.zeros((n_folds, len(keys)))
    onehot[folds, np.arange(len(keys))] = 1.0
    score = np.zeros((n_folds, len(chains)))
    cost = np.zeros((n_folds, len(chains)))
    for i in range(0, len(chains), BLOCK):
        s, c = _block(keys, scores, costs, reliability, chains[i : i + BLOCK], ks[i : i + BLOCK])
        score[:, i : i + BLOCK] = onehot @ s
        cost[:, i : i + BLOCK] = onehot @ c
    return score, cost


def choose(score: np.ndarray, cost: np.ndarray, n: float, budget: float, slack: float = 0.0) -> int:
    """The cheapest candidate whose mean score (totals over `n` queries) is within `slack` of
    the best mean score among those whose mean cost is within `budget` USD; the cheapest
    candidate when none fits. A slack > 0 is shrinkage: among chains the training file cannot
    tell apart, the cheaper is the safer bet."""
    mean_cost, mean_score = cost / n, score / n
    fits = np.flatnonzero(mean_cost <= budget * (1 + 1e-9))
    if not len(fits):
        return int(np.argmin(mean_cost))
    near = fits[mean_score[fits] >= mean_score[fits].max() - slack - 1e-12]
    # Costs equal up to summation order are a tie (a member never called adds nothing, but the
    # fold sums may differ in the last bit): the higher score wins, then the earlier candidate,
    # i.e. the shorter chain.
    cheapest = near[mean_cost[near] <= mean_cost[near].min() * (1 + 1e-9) + 1e-18]
    return int(cheapest[np.argmax(mean_score[cheapest])])
