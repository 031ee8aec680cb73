"""`chain`: the agreement chain (`router.chains`) as an offline strategy, run on recorded replies.

`coe eval --routers …,chain` fits a `router.chains.ChainRouter` on the training file (which
chooses a chain per cost budget by K-fold CV inside that file) and runs each budget's chain on
the test file through a `training.recorded.Ledger`, driving the very `ChainEpisode` the gateway
drives: an expert's reply is read only after the episode called it and paid for it, and the
answer is the reply the episode names. Points: `share`, the budget as a share of the best
single expert's mean training cost. The report entry also carries `cv`: per budget, the chain
chosen, its candidate family and its train-CV accuracy and cost share, to set beside the test.
With `regions` (`--params '{"chain": {"regions": true}}'`) the router is a
`router.chains.RegionalChainRouter`: each test query runs the chain of the region its
embedding falls in, wherever a partition won that budget on the training folds.

Example::

    chain = ChainStrategy().fit(train, x_train, reply_table(train.responses, train.prompts))
    run = chain.run(test, table_test, chain.quality(x_test, test.prompts), {"share": 0.3})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from router.answers import conclusion
from router.chains import SHARES, Chain, ChainEpisode, ChainRouter, RegionalChainRouter
from router.data import RoutingData
from router.reply_checks import suspect
from training.recorded import Ledger, ReplyTable
from training.strategies import Episodes, Strategy


@dataclass(frozen=True)
class ChainRun(Episodes):
    """`Episodes` of a chain run, with each query's chain `k` (regions may differ in it)."""

    k: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


__all__ = ["ChainRun", "ChainStrategy"]


class ChainStrategy(Strategy):
    """Agreement chains chosen on the training file, one per cost budget."""

    name = "chain"

    def __init__(
        self,
        shares: tuple[float, ...] = SHARES,
        folds: int = 5,
        seed: int = 0,
        regions: bool = False,
    ) -> None:
        super().__init__(folds=folds, seed=seed)
        self.shares = tuple(shares)
        self.regions = regions

    def fit(self, data: RoutingData, x: np.ndarray, table: ReplyTable) -> Self:
        """Fit the chain router (it reads the replies' conclusions itself, as serving does);
        with `regions`, `RegionalChainRouter`, whose query's region may pick its chain."""
        family = RegionalChainRouter if self.regions else ChainRouter
        self.router_ = family(shares=self.shares, folds=self.folds, seed=self.seed)
        self.router_.fit(data, x)
        return self

    def report(self, runs: list[tuple[dict[str, float], Episodes]]) -> list[dict[str, Any]]:
        """Per budget: the chain chosen (expert names, k), its candidate family, its train-CV
        accuracy and cost share, and beside them the test run's (`test_*`), its calls per
        query and `escalated`: the share of queries that called past the first k members
        (k = 2: past the pair)."""
        names = self.router_.models_
        tested = {point["share"]: run for point, run in runs}
        out = []
        for r in self.router_.cv_:
            row: dict[str, Any] = {**r, "experts": [names[j] for j in r["experts"]]}
            if "region_chains" in r:
                row["region_chains"] = [
                    {**c, "experts": [names[j] for j in c["experts"]]} for c in r["region_chains"]
                ]
            run = tested.get(r["share"])
            if run is not None:
                row |= {
                    "test_accuracy": float(run.score.mean()),
                    "test_cost_usd": float(run.cost.mean()),
                    "calls_per_query": float(run.calls.mean()),
                    "escalated": self.escalated(run, {"share": r["share"]}),
                }
            out.append(row)
        return out

    def cv_points(self) -> dict[str, tuple[dict[str, float], bool]]:
        """Operating points chosen on the training file's K folds (`router_.cv_`), each with
        whether any budget met its aim there (else the cheapest budget):

        - `cost`: the most accurate budget (cheaper on ties) whose held-out cost share is at
          most the best single expert's own, counted the same way (`cv_single_cost_share`,
          about 1): "cost ≤ the best single model's", where that model alone qualifies;
        - `safe`: the most accurate budget whose held-out cost share stayed ≤ 1 on every
          fold: since each fold is a sample of new queries about the size of a test split,
          the fold-to-fold spread is the margin the budget keeps below 1.0× (the best single
          model alone rarely passes: its own cost varies across folds);
        - `match`: the cheapest budget whose held-out accuracy is at least the best single
          expert's, picked and scored on the same folds.
        """
        rows = self.router_.cv_
        cheapest = min(rows, key=lambda r: (r["cv_cost_share"], r["share"]))
        cost = [r for r in rows if r["cv_cost_share"] <= r.get("cv_single_cost_share", 1.0) + 1e-9]
        safe = [r for r in rows if max(r["cv_fold_cost_shares"]) <= 1.0 + 1e-9]
        match = [r for r in rows if r["cv_accuracy"] >= r["cv_single_accuracy"] - 1e-12]
        picks = {
            "cost": _most_accurate(cost),
            "safe": _most_accurate(safe),
            "match": min(match, key=lambda r: (r["cv_cost_share"], r["share"])) if match else None,
        }
        return {
            label: ({"share": (row or cheapest)["share"]}, row is not None)
            for label, row in picks.items()
        }

    def quality(self, x: np.ndarray, prompts: Any) -> np.ndarray:
        """What a chain reads of the query before calling anyone: its embedding, which only a
        regional chain uses (to find the query's region)."""
        return np.asarray(x, dtype=np.float32)

    def escalated(self, run: Episodes, point: dict[str, float]) -> float:
        """Share of queries that called past their chain's first k members (k = 2: the pair
        every query asks; k = 1: the first expert)."""
        k = getattr(run, "k", None)
        if k is None or len(k) != len(run.calls):
            k = self.router_.chain_for(point["share"]).k
        return float((run.calls > k).mean())

    def grid(self) -> list[dict[str, float]]:
        return [{"share": s} for s in self.shares]

    def run(
        self, data: RoutingData, table: ReplyTable, quality: np.ndarray, point: dict[str, float]
    ) -> Episodes:
        router = self.router_
        chains = router.chains_for(point["share"], quality)
        reliability = dict(zip(router.models_, map(float, router.reliability_), strict=True))
        index = {name: j for j, name in enumerate(router.models_)}
        episodes = [ChainEpisode(chain, reliability) for chain in chains]
        ledger = Ledger(data, table, np.arange(len(data)))
        for _ in range(max((len(c.experts) for c in chains), default=0)):
            ask = [ep.next_expert() for ep in episodes]
            experts = np.array([-1 if e is None else index[e] for e in ask], dtype=np.int64)
            if (experts < 0).all():
                break
            before = ledger.spent.copy()
            ledger.call(experts)
            keys = ledger.seen().keys
            for i, e in enumerate(experts):
                if e >= 0:
                    key = int(keys[i, e])
                    flagged = _suspect(episodes[i].chain, router.math_, data, i, int(e))
                    episodes[i].record_key(ask[i] or "", ledger.spent[i] - before[i],
                                           key if key >= 0 else None, flagged)  # fmt: skip
        answer = np.array([index.get(ep.answer_expert() or "", -1) for ep in episodes])
        run = Episodes.settled(ledger, answer)
        k = np.array([c.k for c in chains], dtype=np.int64)
        return ChainRun(run.answer, run.score, run.cost, run.calls, run.called, k)


def _suspect(chain: Chain, math: bool, data: RoutingData, i: int, j: int) -> bool:
    """Whether query i's recorded reply of expert j fails the chain's check, read from its
    text as the served episode reads it (`ChainEpisode.record`); False when not checked."""
    text = None if data.responses is None else data.responses[i, j]
    if not chain.check or not isinstance(text, str):
        return False
    found = conclusion(text, data.prompts[i], math)
    return suspect(text, chain.check, found)


def _most_accurate(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of highest held-out accuracy (cheaper on ties); None without rows."""
    return max(rows, key=lambda r: (r["cv_accuracy"], -r["cv_cost_share"]), default=None)
