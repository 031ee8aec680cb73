"""Searching agreement chains on training replies: every candidate simulated at once, in numpy.

An agreement chain (`router.chains`) calls its experts in order and stops as soon as the
latest reply's conclusion is shared by as many of the replies called as that member needs
(`needs[t]`; a plain chain needs `k` everywhere: k = 1, the first reply that concludes
anything; k = 2, the first two that agree; a *trusting* chain needs 1 from its trusted member
on); if the chain ends first it answers with the conclusion most replies share, the last
reply's on a tie, else the one whose latest reply is the most reliable (with k ≤ 2 nothing is
shared by then: the last reply if it concludes anything, else the most reliable that does).
Whether it pays depends on how the members' errors correlate (two cheap experts that agree
are rarely both wrong), which no per-expert accuracy shows, so the chain is chosen by
simulating candidates on the training replies:

- `candidates(m, max_len)`: singles, and every k = 2 chain of 2–`max_len` distinct experts (the
  first two unordered: they are both called before anything can stop), plus k = 1 pairs (the
  second called only when the first concludes nothing).
- `agreeing(m, k, max_len, reliability)`: the first `k` experts (unordered) and a rising tail,
  stopping when `k` agree (k = 3: three cheap experts that all agree).
- `trusting(m, reliability, k)`: "k agree, else the trusted expert answers": `k` experts that
  stop when they agree (k = 2: optionally a third, stronger one that may agree with either),
  then a stronger expert whose reply answers alone, then optionally a fallback called only when
  the trusted one concludes nothing.
- `simulate(...)`: `(n, N)` score and cost of every candidate on every training query, exactly
  as `router.chains.ChainEpisode` would run it (a test holds them equal), in blocks of columns;
  with `suspect` (which replies fail a check of their own text, `router.reply_checks`) the
  candidates run *checked*: a suspect reply of a member before the last and before any trusted
  one concludes nothing (`checked_positions`).
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

__all__ = [
    "agreeing",
    "candidates",
    "checked_positions",
    "choose",
    "fold_totals",
    "needs_of",
    "simulate",
    "trusting",
]

#: Candidate columns simulated at once (bounds the `(n, block)` working arrays) ...
BLOCK = 2048
#: ... and query × candidate cells at once, so that large training files use narrower blocks.
CELLS = 4_000_000


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


def agreeing(
    m: int, k: int, max_len: int, reliability: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`(chains, needs)`: `k` experts called before anything can stop (unordered), then a
    tail of experts each more reliable than every one before, stopping when `k` agree."""
    rows: list[tuple[int, ...]] = []
    for head in combinations(range(m), k):
        rows += [(*head, *tail) for tail in _rising_tails(reliability, head, max_len - k)]
    return _pack(rows, [[k] * len(r) for r in rows])


def trusting(m: int, reliability: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`(chains, needs)` of "`k` agree, else the trusted expert answers": the first `k` experts
    (unordered) stop when they agree; with k = 2 a third expert more reliable than both may
    follow (stopping when it agrees with either); then the trusted expert, more reliable than
    all before it, whose concluding reply answers alone; then, only where there is no third,
    a fallback of any other expert (it answers when the trusted reply concludes nothing)."""
    rows: list[tuple[int, ...]] = []
    needs: list[list[int]] = []
    for head in combinations(range(m), k):
        prefixes = [head]
        if k == 2:
            third = [c for c in range(m) if c not in head and _above(reliability, head, c)]
            prefixes += [(*head, c) for c in third]
        for prefix in prefixes:
            for trusted in range(m):
                if trusted in prefix or not _above(reliability, prefix, trusted):
                    continue
                tails: list[tuple[int, ...]] = [()]
                if len(prefix) == k:
                    tails += [(f,) for f in range(m) if f not in (*prefix, trusted)]
                for tail in tails:
                    rows.append((*prefix, trusted, *tail))
                    needs.append([k] * len(prefix) + [1] * (1 + len(tail)))
    return _pack(rows, needs)


def _above(reliability: np.ndarray, before: tuple[int, ...], j: int) -> bool:
    return bool(reliability[j] > max(reliability[i] for i in before))


def _rising_tails(
    reliability: np.ndarray, head: tuple[int, ...], longest: int
) -> list[tuple[int, ...]]:
    tails: list[tuple[int, ...]] = [()]
    frontier: list[tuple[int, ...]] = [()]
    for _ in range(longest):
        frontier = [
            (*t, j)
            for t in frontier
            for j in range(len(reliability))
            if j not in head and j not in t and _above(reliability, (*head, *t), j)
        ]
        tails += frontier
    return tails


def _pack(rows: list[tuple[int, ...]], needs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(r) for r in rows), default=1)
    chains = np.full((len(rows), width), -1, dtype=np.int64)
    need = np.ones((len(rows), width), dtype=np.int64)
    for i, (r, nd) in enumerate(zip(rows, needs, strict=True)):
        chains[i, : len(r)] = r
        need[i, : len(nd)] = nd
    return chains, need


def needs_of(chains: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """`(N, width)` replies needed to stop after each member: `ks` itself when per member, else
    each chain's `k` at every position."""
    ks = np.asarray(ks, dtype=np.int64)
    if ks.ndim == 2:
        return ks
    return np.repeat(ks[:, None], chains.shape[1], axis=1)


def checked_positions(chains: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """`(N, width)` the members whose suspect replies a checked chain disregards: all but the
    last member and the trusted ones (`router.chains.Chain.checks`), whose replies answer."""
    need = needs_of(chains, ks)
    length = (chains >= 0).sum(axis=1)
    k = np.where(chains >= 0, need, 0).max(axis=1)
    trusted = (k[:, None] > 1) & (need == 1)
    before_last = np.arange(chains.shape[1])[None, :] < length[:, None] - 1
    return np.asarray(before_last & ~trusted, dtype=bool)


def _block(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    reliability: np.ndarray,
    chains: np.ndarray,
    ks: np.ndarray,
    suspect: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n, width = len(keys), chains.shape[1]
    need = needs_of(chains, ks)
    checked = None if suspect is None else checked_positions(chains, need)
    shape = (n, len(chains))
    done = np.zeros(shape, dtype=bool)
    spent, got = np.zeros(shape), np.zeros(shape)
    last, last_valid = np.zeros(shape), np.zeros(shape, dtype=bool)
    last_votes, top = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    rank, fallback = np.full(shape, -np.inf), np.zeros(shape)  # the most shared conclusion
    earlier: list[np.ndarray] = []
    for t in range(width):
        e = chains[:, t]
        on = ~done & (e >= 0)[None, :]
        col = np.maximum(e, 0)
        key, score = keys[:, col], scores[:, col]
        if checked is not None and suspect is not None:  # a checked member's suspect reply
            key = np.where(checked[:, t][None, :] & suspect[:, col], -1, key)
        valid = key >= 0
        spent += np.where(on, costs[:, col], 0.0)
        votes = 1 + sum((prev == key).astype(np.int64) for prev in earlier)
        stop = on & valid & (votes >= need[:, t][None, :])
        got = np.where(stop, score, got)
        last = np.where(on, score, last)
        last_valid = np.where(on, valid, last_valid)
        last_votes = np.where(on, votes, last_votes)
        counted = on & valid
        rel = reliability[col][None, :]
        better = counted & ((votes > top) | ((votes == top) & (rel > rank)))
        rank = np.where(better, rel, rank)
        fallback = np.where(better, score, fallback)
        top = np.where(counted, np.maximum(top, votes), top)
        # a reply not called (or concluding nothing) never matches a later one
        earlier.append(np.where(counted, key, -3 - t))
        done |= stop
    ended = np.where((last_valid & (last_votes >= top)) | np.isinf(rank), last, fallback)
    return np.where(done, got, ended), spent


def simulate(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    reliability: np.ndarray,
    chains: np.ndarray,
    ks: np.ndarray,
    suspect: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(score, cost)`, each `(n, N)`: every chain run on every query of the recorded `(n, m)`
    replies (`keys`: conclusion codes, negative where none), `reliability` `(m,)` ranking the
    fallback answer; `ks` `(N,)` each chain's k, or `(N, width)` its `needs`. With `suspect`
    `(n, m)`, the chains are *checked*: a suspect reply of a member of `checked_positions`
    counts as concluding nothing."""
    step = _width(len(keys))
    parts = [
        _block(keys, scores, costs, reliability, chains[i : i + step], ks[i : i + step], suspect)
        for i in range(0, len(chains), step)
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
    suspect: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(score, cost)` summed per fold, each `(F, N)`; `folds[i]` is query i's fold in 0..F−1
    (`suspect`: as `simulate`'s)."""
    n_folds = int(folds.max()) + 1
    onehot = np.zeros((n_folds, len(keys)))
    onehot[folds, np.arange(len(keys))] = 1.0
    score = np.zeros((n_folds, len(chains)))
    cost = np.zeros((n_folds, len(chains)))
    step = _width(len(keys))
    for i in range(0, len(chains), step):
        s, c = _block(
            keys, scores, costs, reliability, chains[i : i + step], ks[i : i + step], suspect
        )
        score[:, i : i + step] = onehot @ s
        cost[:, i : i + step] = onehot @ c
    return score, cost


def _width(n: int) -> int:
    return max(64, min(BLOCK, CELLS // max(n, 1)))


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
