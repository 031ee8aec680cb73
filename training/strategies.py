"""Offline composition strategies: `vote` and `cascade`, run on recorded replies.

Each strategy is fitted on a training file and then run, one operating point at a time, on
another file's recorded replies through a `training.recorded.Ledger`: it sees a reply only after
calling (and paying for) that expert, decides with *predicted* quality and cost, and is charged
the recorded cost of every call it makes. `training.strategy_eval` sweeps the operating points
into a cost–quality curve that `coe eval` reports beside the routers.

- `vote` (Symbolic-MoE): recruit per query the k experts of highest utility
  `q − λ · predicted cost / scale` under the trained profile (`q`: the `skills` router's
  per-cluster accuracies by default), then a weighted majority over their normalised conclusions,
  each expert weighted by its reliability on the query (`router.vote`). Points: k × λ.
- `cascade` (FrugalGPT/AutoMix): call the cheapest trusted expert, then escalate along the chain
  until the learned stop rule says the answer so far is right with probability ≥ τ
  (`router.cascade`). Points: trust × τ.

Predicted cost of a call is the expert's mean recorded cost on the training file; the profile's
quality on training queries is predicted out of fold when it trains the stop rule.

Example::

    vote = VoteStrategy().fit(train, x_train, reply_table(train.responses, train.prompts))
    q = vote.quality(x_test, test.prompts)
    run = vote.run(test, table_test, q, {"k": 3, "lambda": 0.1})   # run.score, run.cost
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from router.answers import option_letters
from router.cascade import StopRule, chain, stop_features
from router.data import RoutingData
from router.vote import leader, recruit, vote_weights
from training.recorded import Ledger, ReplyTable

__all__ = ["STRATEGIES", "CascadeStrategy", "Episodes", "Strategy", "VoteStrategy", "n_options"]

#: λ values a vote sweeps (relative to the training data's cost scale, as for routers).
VOTE_LAMBDAS: tuple[float, ...] = (0.0, *np.logspace(-2.5, 1.0, 15).tolist())
#: Candidates for how many distinct wrong answers an open-ended (numeric) question has, i.e.
#: how little a chance agreement counts in a vote; chosen per training file (`Strategy.fit`).
OPEN_OPTIONS: tuple[float, ...] = (2.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class Episodes:
    """One operating point run on `b` queries: the expert whose reply each query returned,
    its recorded score, the USD spent on every call, the calls made, and which experts each
    query called `(b, m)`."""

    answer: np.ndarray
    score: np.ndarray
    cost: np.ndarray
    calls: np.ndarray
    called: np.ndarray

    @classmethod
    def settled(cls, ledger: Ledger, answer: np.ndarray) -> Episodes:
        """The episodes `ledger` ran, returning `answer`."""
        return cls(
            answer, ledger.settle(answer), ledger.spent.copy(), ledger.calls, ledger.called.copy()
        )


def n_options(prompts: Sequence[str], open_options: float) -> np.ndarray:
    """`(b, 1)`: options of each multiple-choice prompt, `open_options` for the others."""
    counts = []
    for p in prompts:
        letters = option_letters(p)
        counts.append(float(len(letters)) if letters else open_options)
    return np.asarray(counts)[:, None]


class Strategy(ABC):
    """A strategy fitted on training data and run at one operating point at a time."""

    name: ClassVar[str]

    def __init__(
        self,
        profile: str = "skills",
        profile_params: dict[str, Any] | None = None,
        open_options: float | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.profile = profile
        self.profile_params = profile_params
        self.open_options = open_options
        self.folds = folds
        self.seed = seed

    def _fit_profile(self, data: RoutingData, x: np.ndarray) -> Any:
        from training.fitting import fit_router

        return fit_router(self.profile, data, x, dict(self.profile_params or {}), self.seed)

    def fit(self, data: RoutingData, x: np.ndarray, table: ReplyTable) -> Self:
        """Fit the profile on training `data` (embedded as `x`), predict its quality on each
        training query out of fold (`oof_quality_`), and choose `open_options_` (the
        `OPEN_OPTIONS` candidate whose vote of the 3 best-profiled experts scores best on the
        training replies, unless `open_options` fixes it)."""
        self.router_ = self._fit_profile(data, x)
        self.est_cost_ = np.asarray(data.costs.mean(axis=0), dtype=np.float64)
        self.cost_scale_ = float(data.costs.max(axis=1).mean()) or 1.0
        self.oof_quality_ = self._out_of_fold(data, x)
        self.open_options_ = self.open_options
        if self.open_options_ is None:
            team = recruit(self.oof_quality_, min(3, len(data.models)))
            ledger = Ledger(data, table, np.arange(len(data)))
            for c in range(team.shape[1]):
                ledger.call(team[:, c])
            keys = ledger.seen().keys
            best = max(
                OPEN_OPTIONS,
                key=lambda n: (self._vote(data, keys, self.oof_quality_, n, team, ledger), n),
            )
            self.open_options_ = best
        return self

    @staticmethod
    def _vote(
        data: RoutingData,
        keys: np.ndarray,
        quality: np.ndarray,
        spread: float,
        team: np.ndarray,
        ledger: Ledger,
    ) -> float:
        weights = vote_weights(quality, n_options(data.prompts, spread))
        winner, _, _ = leader(keys, weights, quality)
        return float(ledger.settle(np.where(winner >= 0, winner, team[:, 0])).mean())

    def weights(self, data: RoutingData, quality: np.ndarray) -> np.ndarray:
        """`(b, m)` vote weight of each expert on each query of `data` (`router.vote`)."""
        assert self.open_options_ is not None
        return vote_weights(quality, n_options(data.prompts, self.open_options_))

    def _out_of_fold(self, data: RoutingData, x: np.ndarray) -> np.ndarray:
        """The profile's quality on each training query from a profile fitted without it."""
        from training.cv import subset

        order = np.random.default_rng(self.seed).permutation(len(data))
        parts = np.array_split(order, max(2, min(self.folds, len(data))))
        out = np.zeros(data.scores.shape)
        for k, held in enumerate(parts):
            rest = np.concatenate([p for i, p in enumerate(parts) if i != k])
            router = self._fit_profile(subset(data, rest), x[rest])
            out[held] = router.score(x[held], [data.prompts[i] for i in held])
        return out

    def quality(self, x: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """`(b, m)` predicted quality of each expert on each query (the trained profile)."""
        return np.asarray(self.router_.score(x, prompts), dtype=np.float64)

    def escalated(self, run: Episodes, point: dict[str, float]) -> float:
        """Share of `run`'s queries that escalated: made more calls than the fewest the
        strategy makes at `point` (here: more than one)."""
        return float((run.calls > 1).mean())

    @abstractmethod
    def grid(self) -> list[dict[str, float]]:
        """The operating points a sweep runs, cheapest-leaning first."""

    @abstractmethod
    def run(
        self, data: RoutingData, table: ReplyTable, quality: np.ndarray, point: dict[str, float]
    ) -> Episodes:
        """Run every query of `data` at `point`; `quality` is `self.quality` on its queries."""


class VoteStrategy(Strategy):
    """Recruit k experts by profile utility; weighted majority of their conclusions."""

    name = "vote"

    def __init__(
        self,
        ks: Sequence[int] = (1, 2, 3, 4, 5, 7),
        lambdas: Sequence[float] = VOTE_LAMBDAS,
        profile: str = "skills",
        profile_params: dict[str, Any] | None = None,
        open_options: float | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(profile, profile_params, open_options, folds, seed)
        self.ks = tuple(ks)
        self.lambdas = tuple(lambdas)

    def grid(self) -> list[dict[str, float]]:
        return [{"k": float(k), "lambda": float(lam)} for k in self.ks for lam in self.lambdas]

    def run(
        self, data: RoutingData, table: ReplyTable, quality: np.ndarray, point: dict[str, float]
    ) -> Episodes:
        k = min(int(point["k"]), quality.shape[1])
        utility = quality - point["lambda"] * self.est_cost_ / self.cost_scale_
        team = recruit(utility, k)
        ledger = Ledger(data, table, np.arange(len(data)))
        for c in range(k):
            ledger.call(team[:, c])
        seen = ledger.seen()
        winner, _, _ = leader(seen.keys, self.weights(data, quality), quality)
        answer = np.where(winner >= 0, winner, team[:, 0])  # nobody concluded: best recruit
        return Episodes.settled(ledger, answer)


class CascadeStrategy(Strategy):
    """Escalate along the trusted chain until the learned stop rule is confident enough."""

    name = "cascade"

    def __init__(
        self,
        trusts: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0),
        thresholds: Sequence[float] = (
            *(0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995),
            1.01,
        ),
        max_calls: int = 4,
        profile: str = "skills",
        profile_params: dict[str, Any] | None = None,
        open_options: float | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(profile, profile_params, open_options, folds, seed)
        self.trusts = tuple(trusts)
        self.thresholds = tuple(thresholds)
        self.max_calls = max_calls

    def grid(self) -> list[dict[str, float]]:
        return [{"trust": t, "threshold": tau} for t in self.trusts for tau in self.thresholds]

    def _steps(
        self,
        data: RoutingData,
        table: ReplyTable,
        quality: np.ndarray,
        trust: float,
        active: np.ndarray | None = None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, Ledger]]:
        """Walk the chains step by step, yielding `(t, on, features, answer, ledger)` after each
        call. A step calls only for episodes still `active` (the caller clears entries between
        steps, in place, to stop them); without `active` every chain runs to its end."""
        links = chain(quality, self.est_cost_, trust, self.max_calls)
        weights = self.weights(data, quality)
        ledger = Ledger(data, table, np.arange(len(data)))
        live = np.ones(len(data), dtype=bool) if active is None else active
        for t in range(self.max_calls):
            on = live & (links[:, t] >= 0)
            if t > 0 and not on.any():
                break
            ledger.call(links[:, t], on)
            seen = ledger.seen()
            features, winner = stop_features(
                seen.keys, seen.marked, seen.length, weights, quality, links, t
            )
            # nobody concluded anything: the reply just called (chains start at index 0)
            answer = np.where(winner >= 0, winner, np.maximum(links[:, t], links[:, 0]))
            yield t, on, features, answer, ledger

    def fit(self, data: RoutingData, x: np.ndarray, table: ReplyTable) -> Self:
        """Fit the profile, then the stop rule on training episodes over every trust level."""
        super().fit(data, x, table)
        quality = self.oof_quality_
        xs: list[list[np.ndarray]] = [[] for _ in range(self.max_calls)]
        ys: list[list[np.ndarray]] = [[] for _ in range(self.max_calls)]
        for trust in self.trusts:
            for t, on, features, answer, ledger in self._steps(data, table, quality, trust):
                xs[t].append(features[on])
                ys[t].append(ledger.settle(answer)[on])
        reached = [t for t in range(self.max_calls) if xs[t]]  # chains may all be shorter
        self.rule_ = StopRule().fit(
            [np.concatenate(xs[t]) for t in reached], [np.concatenate(ys[t]) for t in reached]
        )
        return self

    def run(
        self, data: RoutingData, table: ReplyTable, quality: np.ndarray, point: dict[str, float]
    ) -> Episodes:
        answer = np.full(len(data), -1, dtype=np.int64)
        active = np.ones(len(data), dtype=bool)
        ledger: Ledger | None = None
        for t, on, features, now, at in self._steps(data, table, quality, point["trust"], active):
            answer = np.where(on, now, answer)
            active &= on & (self.rule_.predict(t, features) < point["threshold"])
            ledger = at
        assert ledger is not None
        return Episodes.settled(ledger, answer)


STRATEGIES: dict[str, type[Strategy]] = {"vote": VoteStrategy, "cascade": CascadeStrategy}
