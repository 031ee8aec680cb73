"""Per-region agreement chains: the region a query's embedding falls in picks the chain to run.

One chain for every query spends the strong expert's calls evenly; where cheap experts agree
reliably in some regions (subjects, clusters) and not in others, choosing per region can move
the budget to where it pays. Regions of a few hundred training queries and thousands of chains
overfit, so the choice is guarded three ways:

- a small menu: a region chooses only among the chains the global search picked for the
  budgets of `router.chains.SHARES` (at most ~18, picked on the same training folds);
- shrinkage: a region's accuracy and cost per menu chain are shrunk toward that chain's mean
  over all regions with `kappa` pseudo-queries (`KAPPAS`);
- the one-standard-error rule against the global chain (`router.chains`, which lists the global
  chain first as the simplest): a partition is used at a budget only when its held-out accuracy
  beats the global chain's by more than one standard error over folds.

The budget is shared, not split: one λ trades accuracy for cost in every region (each region
takes the menu chain of highest shrunk `accuracy − λ · cost`), λ being the most accurate whose
training cost fits the budget, so regions where agreement is cheap and reliable pay for the
strong expert in the others. Regions are nearest centroids of the query embedding
(`partitions`): k-means clusters, or each task's (MMLU-Pro's subject's) mean embedding, so the
gateway finds a query's region exactly as training did, from the embedding alone.

Example::

    parts, labels = partitions(train, x_train, seed=0, folds=5)
    menu = Menu.of(keys, scores, costs, reliability, tables, columns)
    held = held_out(menu, (labels["task"], parts["task"].n_regions), fold, singles, 0.5, 50.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.base import Router
from router.chain_search import needs_of, simulate
from router.costs import kmeans, nearest_centroid
from router.data import RoutingData

__all__ = [
    "CLUSTERS",
    "GATES",
    "KAPPAS",
    "Centroids",
    "Gate",
    "Menu",
    "Neighbours",
    "Partition",
    "assign",
    "held_out",
    "partitions",
]

#: k-means partitions tried (each only with ≥ `MIN_REGION` training queries per region).
CLUSTERS: tuple[int, ...] = (4, 8)
#: Shrinkage pseudo-queries tried: a region of n queries weighs its own figures n / (n + κ).
KAPPAS: tuple[float, ...] = (50.0, 200.0)
#: Gate partitions tried: cut points of the predicted mean quality, as training quantiles.
GATES: dict[str, tuple[float, ...]] = {
    "gate-25": (0.25,),
    "gate-50": (0.5,),
    "gate-3": (1 / 3, 2 / 3),
}
#: The one-shot router whose predictions the gate cuts (numpy only when serving).
GATE_ROUTER = "knn"
#: Fewest training queries per region, on average, for a partition to be tried.
MIN_REGION = 50
#: Most distinct tasks for a task partition (more are not subjects but ids).
MAX_TASKS = 32
#: λ grid, in units of accuracy per (the menu's dearest mean cost): 0, then log-spaced.
LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 401)])

#: A held-out estimate, as `router.chain_select._held_out` returns it: (accuracy, cost share, the
#: cost share per fold, the best single expert's accuracy, the accuracy per fold).
Held = tuple[float, float, list[float], float, np.ndarray]


@dataclass(frozen=True)
class Centroids:
    """Regions by the nearest of unit-norm `centroids` (cosine)."""

    centroids: np.ndarray

    @property
    def n_regions(self) -> int:
        return len(self.centroids)

    def labels(self, x: np.ndarray) -> np.ndarray:
        """`(n,)` region of each embedding row."""
        return np.asarray(nearest_centroid(x, self.centroids), dtype=np.int64)


@dataclass(frozen=True)
class Gate:
    """Regions by a one-shot router's predicted quality averaged over the experts, cut at
    `edges`: region 0 holds the queries it expects most experts to fail, where asking cheap
    experts first mostly buys a disagreement, and a region's menu includes the strong expert
    alone (the gate's "go straight to the strong expert", if the folds say it pays)."""

    router: Router
    edges: np.ndarray

    @property
    def n_regions(self) -> int:
        return len(self.edges) + 1

    def predicted(self, x: np.ndarray) -> np.ndarray:
        """`(n,)` predicted mean quality over the experts."""
        quality = self.router.score(np.asarray(x, dtype=np.float32), [""] * len(x))
        return np.asarray(np.asarray(quality, dtype=np.float64).mean(axis=1))

    def labels(self, x: np.ndarray) -> np.ndarray:
        """`(n,)` region of each embedding row."""
        return self.cut(self.predicted(x))

    def cut(self, predicted: np.ndarray) -> np.ndarray:
        return np.asarray(np.searchsorted(self.edges, predicted, side="right"), dtype=np.int64)


@dataclass(frozen=True)
class Neighbours:
    """Regions by the task most common among the `k` training queries most similar to the
    query (cosine): a subject classifier, closer to the rows' own subject than the nearest
    task centroid where subjects overlap in embedding space."""

    x: np.ndarray
    task: np.ndarray
    n_regions: int
    k: int = 25

    def labels(self, x: np.ndarray) -> np.ndarray:
        """`(n,)` region of each embedding row, in blocks of rows (bounded memory)."""
        x = np.asarray(x, dtype=np.float32)
        k = min(self.k, len(self.x))
        out = np.zeros(len(x), dtype=np.int64)
        for a in range(0, len(x), 512):
            sim = x[a : a + 512] @ self.x.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            votes = np.zeros((len(sim), self.n_regions))
            np.add.at(votes, (np.arange(len(sim))[:, None], self.task[top]), 1.0)
            out[a : a + 512] = votes.argmax(axis=1)
        return out


#: A partition of queries into regions, from the query embedding alone.
Partition = Centroids | Gate | Neighbours


def partitions(
    data: RoutingData, x: np.ndarray, seed: int, folds: int
) -> tuple[dict[str, Partition], dict[str, np.ndarray]]:
    """Candidate partitions by name, and each training query's region under each.

    `kmeans-K` for K in `CLUSTERS`; `task` (each task's mean embedding) and `task-knn` (the
    most common task among the nearest training queries, `Neighbours`; training queries placed
    out of fold) when the rows carry between 2 and `MAX_TASKS` tasks; each only with
    `MIN_REGION` queries per region. `gate-…`
    (`GATES`): the `GATE_ROUTER` router's predicted mean quality cut at training quantiles;
    training queries are placed by predictions made out of fold (`router.rl_prior`, the
    chain's own folds) so that they are as wrong as a new query's, and the served gate's
    router is fitted on the whole file. A training query's centroid region is the nearest of
    centroids fitted on the whole file (unsupervised: no outcome is read).
    """
    from router.rl_prior import fit_prior, out_of_fold

    x = np.asarray(x, dtype=np.float32)
    out: dict[str, Partition] = {}
    for k in CLUSTERS:
        if len(x) >= MIN_REGION * k:
            out[f"kmeans-{k}"] = Centroids(kmeans(x, k, seed))
    tasks = np.asarray([t or "" for t in data.tasks])
    names = sorted({t for t in tasks if t})
    if 2 <= len(names) <= MAX_TASKS and len(x) >= MIN_REGION * len(names):
        centres = np.stack([x[tasks == t].mean(axis=0) for t in names])
        norms = np.linalg.norm(centres, axis=1, keepdims=True)
        out["task"] = Centroids(np.asarray(centres / np.where(norms > 0, norms, 1.0)))
    labels = {name: p.labels(x) for name, p in out.items()}
    if "task" in out:
        task = np.searchsorted(names, tasks)
        out["task-knn"] = Neighbours(x, task, len(names))
        labels["task-knn"] = _out_of_fold(x, task, len(names), folds, seed)
    gates = {n: q for n, q in GATES.items() if len(x) >= MIN_REGION * (len(q) + 1)}
    if gates:
        oof = out_of_fold(GATE_ROUTER, None, data, x, folds, seed).mean(axis=1)
        router = fit_prior(GATE_ROUTER, None, data, x)
        for name, quantiles in gates.items():
            gate = Gate(router, np.quantile(oof, quantiles))
            out[name], labels[name] = gate, gate.cut(oof)
    return out, labels


def _out_of_fold(
    x: np.ndarray, task: np.ndarray, n_tasks: int, folds: int, seed: int
) -> np.ndarray:
    """Each training query's `Neighbours` region, predicted from the other folds (the chain's
    own folds): a query is not its own neighbour, as a new query is not."""
    n = len(x)
    fold = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
    out = np.zeros(n, dtype=np.int64)
    for f in range(int(fold.max()) + 1):
        rest, held = fold != f, fold == f
        out[held] = Neighbours(x[rest], task[rest], n_tasks).labels(x[held])
    return out


@dataclass(frozen=True)
class Menu:
    """The chains a region may choose: per-query `score` and `cost` `(n, U)` of `U` chains
    (`chains[u]`: `(family index, candidate index)`), and per outer fold (`None`: the whole
    file) the column the global search picked for each budget share."""

    score: np.ndarray
    cost: np.ndarray
    chains: list[tuple[int, int]]
    columns: dict[int | None, dict[float, int]]

    @classmethod
    def of(
        cls,
        keys: np.ndarray,
        scores: np.ndarray,
        costs: np.ndarray,
        reliability: np.ndarray,
        tables: Sequence[tuple[np.ndarray, np.ndarray]],
        picks: dict[int | None, dict[float, tuple[int, int]]],
    ) -> Menu:
        """Simulate, query by query, every chain in `picks` (`(family, index)` into `tables`'
        `(chains, needs)`), once each."""
        unique = sorted({p for per in picks.values() for p in per.values()})
        score = np.zeros((len(keys), len(unique)))
        cost = np.zeros((len(keys), len(unique)))
        for family in sorted({f for f, _ in unique}):
            cols = [u for u, (f, _) in enumerate(unique) if f == family]
            idx = np.array([unique[u][1] for u in cols], dtype=np.int64)
            chains, needs = tables[family]
            s, c = simulate(
                keys, scores, costs, reliability, chains[idx], needs_of(chains, needs)[idx]
            )
            score[:, cols], cost[:, cols] = s, c
        where = {p: u for u, p in enumerate(unique)}
        columns = {f: {share: where[p] for share, p in per.items()} for f, per in picks.items()}
        return cls(score, cost, unique, columns)


def assign(
    score: np.ndarray,
    cost: np.ndarray,
    labels: np.ndarray,
    n_regions: int,
    columns: Sequence[int],
    budget: float,
    kappa: float,
) -> np.ndarray:
    """`(n_regions,)` menu column per region: each region's chain of highest shrunk `accuracy
    − λ · cost` for the λ whose assignment is the most accurate on these queries with mean
    cost ≤ `budget` (cheaper on ties; the cheapest assignment when none fits)."""
    cols = np.array(sorted(set(columns)), dtype=np.int64)
    n = len(labels)
    sums_s = np.zeros((n_regions, len(cols)))
    sums_c = np.zeros((n_regions, len(cols)))
    np.add.at(sums_s, labels, score[:, cols])
    np.add.at(sums_c, labels, cost[:, cols])
    counts = np.bincount(labels, minlength=n_regions)[:, None].astype(np.float64)
    hat_s = (sums_s + kappa * sums_s.sum(0) / n) / (counts + kappa)
    hat_c = (sums_c + kappa * sums_c.sum(0) / n) / (counts + kappa)
    scale = max(float(hat_c.max()), 1e-300)
    lambdas = LAMBDAS / scale
    # a tiny cost tie-break: among chains equal on the shrunk value, the cheaper
    value = hat_s[None] - (lambdas[:, None, None] + 1e-9 / scale) * hat_c[None]
    pick = value.argmax(axis=2)  # (L, R)
    rows = np.arange(n_regions)[None, :]
    total_s = sums_s[rows, pick].sum(axis=1) / n
    total_c = sums_c[rows, pick].sum(axis=1) / n
    fits = np.flatnonzero(total_c <= budget * (1 + 1e-9))
    if not len(fits):
        best = int(np.argmin(total_c))
    else:
        best = int(fits[np.lexsort((total_c[fits], -total_s[fits]))[0]])
    return np.asarray(cols[pick[best]], dtype=np.int64)


def held_out(
    menu: Menu,
    regions: tuple[np.ndarray, int],
    fold: np.ndarray,
    singles: tuple[np.ndarray, np.ndarray],
    share: float,
    kappa: float,
) -> Held:
    """K-fold estimate of the per-region choice at budget `share` (of the best single expert's
    mean cost on the training folds), in `router.chain_select._held_out`'s shape: on each fold, the
    regions are assigned on the other folds from the menu those folds' global search picked.

    `regions`: each query's region and how many regions there are; `singles`: the `(n, m)`
    scores and costs of each single expert.
    """
    single_s, single_c = singles
    labels, n_regions = regions
    got = spent = ref = single = 0.0
    per_fold: list[float] = []
    accuracy: list[float] = []
    for f in range(int(fold.max()) + 1):
        rest, held = fold != f, fold == f
        n_rest = float(rest.sum())
        best = int(np.lexsort((single_c[rest].sum(0), -single_s[rest].sum(0)))[0])
        mean_ref = float(single_c[rest, best].sum()) / n_rest
        picks = assign(
            menu.score[rest],
            menu.cost[rest],
            labels[rest],
            n_regions,
            list(menu.columns[f].values()),
            share * mean_ref,
            kappa,
        )
        chosen = picks[labels[held]]
        rows = np.flatnonzero(held)
        s, c = float(menu.score[rows, chosen].sum()), float(menu.cost[rows, chosen].sum())
        fold_ref = mean_ref * float(held.sum())
        got, spent, ref = got + s, spent + c, ref + fold_ref
        single += float(single_s[held, best].sum())
        per_fold.append(c / fold_ref if fold_ref > 0 else 0.0)
        accuracy.append(s / float(held.sum()))
    total = float(len(fold))
    return (
        got / total,
        spent / ref if ref > 0 else 0.0,
        per_fold,
        single / total,
        np.array(accuracy),
    )
