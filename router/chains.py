"""The agreement chain: call experts in a learned order, stop when their answers agree.

"Two cheap models agree, else a strong one" beats paying the strong model every time when the
cheap models' errors are independent enough that agreeing on a wrong answer is rare. Which
models, in which order, and whether agreement is asked for at all, is learned from recorded
replies on the training file (`router.chain_search`), so it rests on how the experts' errors
correlate rather than on each one's accuracy.

A `Chain` is experts `e0, e1, …` and `k`: call them in order; after each reply, stop if its
conclusion (`router.answers.conclusion`: the option letter, the final number, or the MATH
answer) is shared by `k` of the replies so far (k = 1: the first reply that concludes
anything; k = 2: the first two that agree), answering with it; when the chain ends, answer with
the last reply if it concludes anything, else with the most reliable reply that does (with
k ≤ 2 no two concluding replies agree by then, so this is a reliability-weighted vote).

`ChainRouter` (`coe train --router chain`) chooses one chain per cost budget, a share of the
best single expert's mean training cost (`shares`), by K-fold cross-validation inside the
training file: on each fold it picks, among the candidates of each family (rising-reliability
chains of at most 1–4 experts, or any chain of at most 3), the cheapest one within `slack` of
the most accurate within budget on the other folds (`SLACKS`: shrinkage against the argmax
over thousands of chains), and keeps the family and slack whose picks score best held out; the
chain is then their pick on the whole file. `cv_` keeps the held-out estimate per budget.
Serving, the gateway runs `episode(...)` (`router.episodes.Episode`) at the budget `share`.

Example::

    router = ChainRouter(share=0.3).fit(train, x_train)          # train.responses required
    episode = router.episode(x, est_costs, question=prompt, budget=0.01)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from router.answers import conclusion
from router.base import Router, register
from router.chain_search import candidates, choose, fold_totals
from router.data import RoutingData

__all__ = ["SHARES", "Chain", "ChainEpisode", "ChainRouter", "conclusion"]

#: Cost budgets a chain is chosen for, as shares of the best single expert's mean cost.
SHARES: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5)
#: Candidate families: (longest chain, whether escalation must rise in reliability).
FAMILIES: tuple[tuple[int, bool], ...] = ((1, True), (2, True), (3, True), (4, True), (3, False))
#: Shrinkage candidates: pick the cheapest chain within this much training accuracy of the best.
SLACKS: tuple[float, ...] = (0.0, 0.0025, 0.005, 0.01)


@dataclass(frozen=True)
class Chain:
    """Experts to call in order, and how many agreeing replies stop it."""

    experts: tuple[str, ...]
    k: int


@dataclass
class ChainEpisode:
    """One query's run of `chain` (`router.episodes.Episode`).

    `est_costs` maps an expert to its predicted USD; one whose estimate does not fit what is
    left of `budget` is passed over. `reliability` ranks the fallback answer.
    """

    chain: Chain
    reliability: dict[str, float]
    est_costs: dict[str, float] = field(default_factory=dict)
    budget: float | None = None
    prompt: str = ""
    math: bool = False
    spent: float = 0.0
    replies: list[tuple[str, Any]] = field(default_factory=list)  # (expert, conclusion)
    _gone: set[str] = field(default_factory=set)
    _pending: str | None = None
    _stopped: str | None = None

    def _open(self) -> list[str]:
        called = {e for e, _ in self.replies}
        return [e for e in self.chain.experts if e not in called and e not in self._gone]

    def next_expert(self) -> str | None:
        if self._stopped is not None:
            return None
        for expert in self._open():
            if self.est_costs.get(expert, 0.0) <= self.remaining:
                self._pending = expert
                return expert
        return None

    def record(self, expert: str, cost_usd: float, answer_text: str | None = None) -> None:
        found = None if answer_text is None else conclusion(answer_text, self.prompt, self.math)
        self.record_key(expert, cost_usd, found)

    def record_key(self, expert: str, cost_usd: float, key: Any) -> None:
        """`record` with the reply's conclusion already read (None: it concludes nothing)."""
        self._take(expert)
        self.spent += cost_usd
        self.replies.append((expert, key))
        if key is not None and sum(k == key for _, k in self.replies) >= self.chain.k:
            self._stopped = expert

    def skip(self, expert: str) -> None:
        self._take(expert)
        self._gone.add(expert)

    def exclude(self, experts: set[str]) -> None:
        self._gone |= set(experts)

    def _take(self, expert: str) -> None:
        if self._pending != expert:
            raise ValueError(f"{expert!r} was not the expert this episode proposed")
        self._pending = None

    @property
    def remaining(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.spent

    def last_call(self) -> bool:
        """True for the chain's last member still open (its reply ends the chain and, when it
        concludes anything, is the answer: streamed, it is the answer whatever it says)."""
        return self._pending is not None and self._open()[-1:] == [self._pending]

    def answer_expert(self) -> str | None:
        if self._stopped is not None or not self.replies:
            return self._stopped
        last, key = self.replies[-1]
        concluding = [e for e, k in self.replies if k is not None]
        if key is not None or not concluding:
            return last
        return max(concluding, key=lambda e: self.reliability.get(e, 0.0))

    def trace(self) -> None:
        """Chains learn nothing from feedback."""
        return None


@register
class ChainRouter(Router):
    """Agreement chains learned from recorded replies (see the module); `score` is each
    expert's training accuracy (one-shot routing with it picks the best single expert)."""

    name = "chain"
    #: The chain reads replies, not the query: no embedding is needed to route or serve.
    uses_embeddings = False

    def __init__(
        self,
        share: float = 1.0,
        shares: Sequence[float] = SHARES,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.share = share
        self.shares = shares
        self.folds = folds
        self.seed = seed

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        """Choose a chain per share of `shares` (and `share`) from `data.responses`."""
        super().fit(data, embeddings)
        if data.responses is None:
            raise ValueError(
                "a chain is learned from every expert's recorded reply: the training file has "
                "no `response` column (import a source that keeps replies)"
            )
        tasks = [t for t in data.tasks if t]
        self.math_ = bool(tasks) and all(t.lower().startswith("math") for t in tasks)
        keys = answer_codes(data.responses, data.prompts, self.math_)
        self.reliability_ = np.asarray(data.scores.mean(axis=0), dtype=np.float64)
        self.chains_, self.cv_ = choose_chains(
            keys, data.scores, data.costs, self.reliability_, self._shares(), self.folds, self.seed
        )
        self.chain_ = self.chain_for(self.share)
        return self

    def _shares(self) -> list[float]:
        return sorted({*map(float, self.shares), float(self.share)})

    def chain_for(self, share: float) -> Chain:
        """The chain chosen for budget `share` (the nearest one chosen at or below it)."""
        fits = [s for s in self.chains_ if s <= share + 1e-12] or [min(self.chains_)]
        picked = self.chains_[max(fits)]
        return Chain(tuple(self.models_[j] for j in picked[0]), picked[1])

    @property
    def max_calls(self) -> int:
        return len(self.chain_.experts)

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        return np.tile(self.reliability_, (len(queries), 1))

    def episode(
        self,
        embedding: np.ndarray | None,
        est_costs: np.ndarray,
        *,
        question: str = "",
        cost_weight: float | None = None,
        budget: float | None = None,
        explore: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> ChainEpisode:
        """A live run of the serving chain (`router.episodes.EpisodeRouter`); the embedding,
        cost weight and exploration are not used (a chain is fixed per budget)."""
        return ChainEpisode(
            self.chain_,
            dict(zip(self.models_, map(float, self.reliability_), strict=True)),
            dict(zip(self.models_, map(float, est_costs), strict=True)),
            budget,
            question,
            self.math_,
        )


def answer_codes(responses: np.ndarray, prompts: Sequence[str], math: bool) -> np.ndarray:
    """`(n, m)` integer code of each recorded reply's `conclusion` (−1: none or no reply)."""
    codes: dict[str, int] = {}
    keys = np.full(responses.shape, -1, dtype=np.int64)
    for (i, j), text in np.ndenumerate(responses):
        found = conclusion(text, prompts[i], math) if isinstance(text, str) else None
        if found is not None:
            keys[i, j] = codes.setdefault(found, len(codes))
    return keys


def choose_chains(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    reliability: np.ndarray,
    shares: Sequence[float],
    folds: int,
    seed: int,
) -> tuple[dict[float, tuple[tuple[int, ...], int]], list[dict[str, Any]]]:
    """Per share: the chosen `(expert indices, k)` and the held-out (train-CV) record."""
    n = len(keys)
    fold = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
    sizes = np.bincount(fold).astype(np.float64)
    tables = []
    for longest, rising in FAMILIES:
        chains, ks = candidates(keys.shape[1], longest, reliability if rising else None)
        tables.append(
            (chains, ks, *fold_totals(keys, scores, costs, reliability, chains, ks, fold))
        )
    singles_s = np.stack([scores[fold == f].sum(0) for f in range(len(sizes))])
    singles_c = np.stack([costs[fold == f].sum(0) for f in range(len(sizes))])
    configs = [(f, slack) for f in range(len(FAMILIES)) for slack in SLACKS]
    chosen: dict[float, tuple[tuple[int, ...], int]] = {}
    record: list[dict[str, Any]] = []
    for share in shares:
        held = [
            _held_out(tables[f][2], tables[f][3], singles_s, singles_c, sizes, share, slack)
            for f, slack in configs
        ]
        # best held-out accuracy; ties: the cheaper held out, then the simpler configuration
        best = max(range(len(configs)), key=lambda i: (round(held[i][0], 9), -held[i][1], -i))
        family, slack = configs[best]
        chains, ks, s, c = tables[family]
        budget = share * _best_cost(singles_s.sum(0), singles_c.sum(0)) / n
        i = choose(s.sum(0), c.sum(0), n, budget, slack)
        members = tuple(int(j) for j in chains[i] if j >= 0)
        chosen[share] = (members, int(ks[i]))
        record.append(
            {
                "share": share,
                "family": {"longest": FAMILIES[family][0], "rising": FAMILIES[family][1]},
                "slack": slack,
                "cv_accuracy": held[best][0],
                "cv_cost_share": held[best][1],
                "experts": list(members),
                "k": int(ks[i]),
            }
        )
    return chosen, record


def _best_cost(score_sum: np.ndarray, cost_sum: np.ndarray) -> float:
    """Total cost of the most accurate single expert (cheaper on ties)."""
    return float(cost_sum[int(np.lexsort((cost_sum, -score_sum))[0])])


def _held_out(
    s: np.ndarray,
    c: np.ndarray,
    singles_s: np.ndarray,
    singles_c: np.ndarray,
    sizes: np.ndarray,
    share: float,
    slack: float,
) -> tuple[float, float]:
    """K-fold estimate of (accuracy, cost / best single's cost) of `choose` within budget."""
    got = spent = ref = 0.0
    for f in range(len(sizes)):
        rest = np.arange(len(sizes)) != f
        n_rest = float(sizes[rest].sum())
        budget = share * _best_cost(singles_s[rest].sum(0), singles_c[rest].sum(0)) / n_rest
        i = choose(s[rest].sum(0), c[rest].sum(0), n_rest, budget, slack)
        got, spent = got + s[f, i], spent + c[f, i]
        ref += _best_cost(singles_s[rest].sum(0), singles_c[rest].sum(0)) / n_rest * sizes[f]
    return got / sizes.sum(), spent / ref if ref > 0 else 0.0
