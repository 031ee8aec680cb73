"""The agreement chain: call experts in a learned order, stop when their answers agree.

"Two cheap models agree, else a strong one" beats paying the strong model every time when the
cheap models' errors are independent enough that agreeing on a wrong answer is rare. Which
models, in which order, and whether agreement is asked for at all, is learned from recorded
replies on the training file (`router.chain_search`), so it rests on how the experts' errors
correlate rather than on each one's accuracy.

A `Chain` is experts `e0, e1, …` and `k`: call them in order; after each reply, stop if its
conclusion (`router.answers.conclusion`: the option letter, the final number, or the MATH
answer) is shared by `k` of the replies so far (k = 1: the first reply that concludes
anything; k = 2: the first two that agree; k = 3: three), answering with it. A chain that
`trust_from` a member stops at that member's (or any later one's) first concluding reply: "two
cheap experts agree, else the strong one answers, and a fallback only if it concludes nothing".
When the chain ends, it answers with the conclusion most replies share: the last reply's if it
is among the most shared, else the one whose latest reply is the most reliable (with k ≤ 2
nothing is shared by then: the last reply if it concludes anything, else the most reliable
reply that does, a reliability-weighted vote).

A chain may be *checked* (`Chain.check`, a rule of `router.reply_checks`): a reply of a member
before the last and before any trusted one that fails the check of its own text (a wrong
arithmetic step) counts as concluding nothing, so cheap replies that agree on a miscomputed
answer escalate; each family is also tried checked by each rule, chosen by the same K folds.

`ChainRouter` (`coe train --router chain`) chooses one chain per cost budget, a share of the
best single expert's mean training cost (`shares`), by K-fold cross-validation inside the
training file (`router.chain_select`): on each fold it picks, among the candidates of each
family (`FAMILIES`: rising-reliability chains of at most 1–4 experts, any chain of at most 3,
three that agree, or agree-then-trust), the cheapest one within `slack` of the most accurate
within budget on the other folds (shrinkage against the argmax over thousands of chains), and
keeps the simplest family and slack whose picks score within one standard error (over folds)
of the best held out (richer families must beat simpler ones by more than noise); the chain is
then their pick on the whole file. `cv_` keeps the held-out estimate per budget.
`RegionalChainRouter` (`coe train --router chain-regions`) may also run a chain per region of
the query embedding where that beats one chain by the same rule (`router.chain_regions`).
Serving, the gateway runs `episode(...)` (`router.episodes.Episode`) at the budget `share`.

Example::

    router = ChainRouter(share=0.3).fit(train, x_train)          # train.responses required
    episode = router.episode(x, est_costs, question=prompt, budget=0.01)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from router.answers import conclusion
from router.base import Router, register
from router.chain_regions import Partition, partitions
from router.chain_select import FAMILIES, Picked, choose_chains
from router.data import RoutingData
from router.reply_checks import RULES, suspect

__all__ = [
    "FAMILIES",
    "SHARES",
    "Chain",
    "ChainEpisode",
    "ChainRouter",
    "RegionalChainRouter",
    "conclusion",
]

#: Cost budgets a chain is chosen for, as shares of the best single expert's mean cost.
SHARES: tuple[float, ...] = (
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5
)  # fmt: skip


@dataclass(frozen=True)
class Chain:
    """Experts to call in order, how many agreeing replies stop it, and the member from which
    one concluding reply is enough (None: agreement throughout)."""

    experts: tuple[str, ...]
    k: int
    trust_from: int | None = None
    #: The check (`router.reply_checks.RULES`; "" none) whose failing replies count as
    #: concluding nothing where a member `checks` them: they neither vote nor answer.
    check: str = ""

    def need(self, position: int) -> int:
        """Agreeing replies that stop the chain after its member at `position`."""
        if self.trust_from is not None and position >= self.trust_from:
            return 1
        return self.k

    def checks(self, position: int) -> bool:
        """Whether the member at `position` disregards its suspect reply: all but the last
        and the trusted ones, whose replies answer (`chain_search.checked_positions`)."""
        trusted = self.trust_from is not None and position >= self.trust_from
        return bool(self.check) and position < len(self.experts) - 1 and not trusted

    @classmethod
    def of(cls, experts: tuple[str, ...], needs: Sequence[int], check: str = "") -> Chain:
        """The chain whose members need `needs` agreeing replies (`chain_search` rows)."""
        needs = [int(x) for x in needs[: len(experts)]]
        k = max(needs)
        trust = next((t for t, x in enumerate(needs) if x == 1), None) if k > 1 else None
        chain = cls(experts, k, trust, check)
        if [chain.need(t) for t in range(len(experts))] != needs:
            raise ValueError(f"needs {needs} are not a k with a trusted tail")
        return chain


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
        flagged = (
            answer_text is not None
            and self.chain.checks(self.chain.experts.index(expert))
            and suspect(answer_text, self.chain.check, found)
        )
        self.record_key(expert, cost_usd, found, flagged)

    def record_key(self, expert: str, cost_usd: float, key: Any, flagged: bool = False) -> None:
        """`record` with the reply's conclusion already read (None: it concludes nothing) and
        whether it fails the chain's check (`router.reply_checks.suspect`; where the member
        `checks`, it then counts as concluding nothing)."""
        if flagged and self.chain.checks(self.chain.experts.index(expert)):
            key = None
        self._take(expert)
        self.spent += cost_usd
        self.replies.append((expert, key))
        need = self.chain.need(self.chain.experts.index(expert))
        if key is not None and sum(k == key for _, k in self.replies) >= need:
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
        """True for the chain's last member still open while no conclusion is shared yet (its
        reply ends the chain and, when it concludes anything, is the answer: streamed, it is
        the answer whatever it says); once two replies agree, an unshared last reply would
        not answer, so it is called whole."""
        return (
            self._pending is not None
            and self._open()[-1:] == [self._pending]
            and self._most_shared()[0] < 2
        )

    def _most_shared(self) -> tuple[int, str | None, int]:
        """(most replies sharing a conclusion, the most reliable latest reply of such a
        conclusion, the votes of the last reply): the vectorised search's rule, reply by reply."""
        counts: dict[Any, int] = {}
        top, best, rank, votes = 0, None, -np.inf, 0
        for expert, key in self.replies:
            votes = 0
            if key is None:
                continue
            votes = counts[key] = counts.get(key, 0) + 1
            rel = self.reliability.get(expert, 0.0)
            if votes > top or (votes == top and rel > rank):
                best, rank = expert, rel
            top = max(top, votes)
        return top, best, votes

    def answer_expert(self) -> str | None:
        if self._stopped is not None or not self.replies:
            return self._stopped
        last, key = self.replies[-1]
        top, best, votes = self._most_shared()
        if best is None or (key is not None and votes >= top):
            return last
        return best

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
    #: Whether the region of a query's embedding may pick its chain (`RegionalChainRouter`).
    regional: ClassVar[bool] = False

    def __init__(
        self,
        share: float = 1.0,
        shares: Sequence[float] = SHARES,
        folds: int = 5,
        seed: int = 0,
        checks: bool = True,
    ) -> None:
        self.share = share
        self.shares = shares
        self.folds = folds
        self.seed = seed
        self.checks = checks

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
        flags = (
            {r: suspect_replies(data.responses, data.prompts, self.math_, r) for r in RULES}
            if self.checks
            else None
        )
        self.reliability_ = np.asarray(data.scores.mean(axis=0), dtype=np.float64)
        self.partitions_: dict[str, Partition] = {}
        labels: dict[str, tuple[np.ndarray, int]] = {}
        if self.regional:
            self.partitions_, found = partitions(data, embeddings, self.seed, self.folds)
            labels = {n: (found[n], p.n_regions) for n, p in self.partitions_.items()}
        self.chains_, self.cv_, self.regional_ = choose_chains(
            keys,
            data.scores,
            data.costs,
            self.reliability_,
            self._shares(),
            self.folds,
            self.seed,
            labels,
            flags,
        )
        self.check_ = {r["share"]: _check_of(str(r["family"])) for r in self.cv_}
        self.chain_ = self.chain_for(self.share)
        return self

    def _shares(self) -> list[float]:
        return sorted({*map(float, self.shares), float(self.share)})

    def _won(self, share: float) -> tuple[float, tuple[str, list[Picked]] | None]:
        """The budget chosen at or below `share` (the lowest when none is), and the partition
        with its chain per region where one won that budget."""
        fits = [s for s in self.chains_ if s <= share + 1e-12] or [min(self.chains_)]
        return max(fits), getattr(self, "regional_", {}).get(max(fits))

    def chain_for(self, share: float, embedding: np.ndarray | None = None) -> Chain:
        """The chain chosen for budget `share` (the nearest one chosen at or below it); where
        a partition won that budget, the chain of the region `embedding` falls in (the global
        chain without an embedding)."""
        key, won = self._won(share)
        members, needs = self.chains_[key]
        if won is not None and embedding is not None:
            partition = self.partitions_[won[0]]
            members, needs = won[1][int(partition.labels(np.reshape(embedding, (1, -1)))[0])]
        check = getattr(self, "check_", {}).get(key, "")
        return Chain.of(tuple(self.models_[j] for j in members), needs, check)

    def chains_for(self, share: float, embeddings: np.ndarray) -> list[Chain]:
        """`chain_for(share, row)` for every row of `embeddings`, the regions found at once."""
        _, won = self._won(share)
        if won is None:
            return [self.chain_for(share)] * len(embeddings)
        per = [Chain.of(tuple(self.models_[j] for j in m), nd) for m, nd in won[1]]
        return [per[int(r)] for r in self.partitions_[won[0]].labels(embeddings)]

    @property
    def max_calls(self) -> int:
        _, won = self._won(self.share)
        return max([len(self.chain_.experts), *(len(m) for m, _ in (won[1] if won else []))])

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
        """A live run of the serving chain (`router.episodes.EpisodeRouter`): the budget's
        chain, or its region's where a partition won it; the cost weight and exploration are
        not used (a chain is fixed per budget and region)."""
        _, won = self._won(self.share)
        regional = won is not None and embedding is not None
        return ChainEpisode(
            self.chain_for(self.share, embedding) if regional else self.chain_,
            dict(zip(self.models_, map(float, self.reliability_), strict=True)),
            dict(zip(self.models_, map(float, est_costs), strict=True)),
            budget,
            question,
            self.math_,
        )


@register
class RegionalChainRouter(ChainRouter):
    """`chain-regions`: agreement chains where the region of the query's embedding (k-means
    clusters, or the training tasks' mean embeddings) may pick the chain, per budget, when the
    training file's K folds say it beats one chain for all (`router.chain_regions`).

    Example::

        router = RegionalChainRouter(share=0.5).fit(train, x_train)
        episode = router.episode(x[0], est_costs, question=prompt)   # x[0]'s region's chain
    """

    name = "chain-regions"
    #: The region is the nearest centroid of the query embedding.
    uses_embeddings = True
    regional = True


def answer_codes(responses: np.ndarray, prompts: Sequence[str], math: bool) -> np.ndarray:
    """`(n, m)` integer code of each recorded reply's `conclusion` (−1: none or no reply)."""
    codes: dict[str, int] = {}
    keys = np.full(responses.shape, -1, dtype=np.int64)
    for (i, j), text in np.ndenumerate(responses):
        found = conclusion(text, prompts[i], math) if isinstance(text, str) else None
        if found is not None:
            keys[i, j] = codes.setdefault(found, len(codes))
    return keys


def suspect_replies(
    responses: np.ndarray, prompts: Sequence[str], math: bool, rule: str = "arithmetic"
) -> np.ndarray:
    """`(n, m)` whether each recorded reply fails check `rule` (`router.reply_checks.suspect`;
    False where there is no reply)."""
    flags = np.zeros(responses.shape, dtype=bool)
    for (i, j), text in np.ndenumerate(responses):
        if isinstance(text, str):
            flags[i, j] = suspect(text, rule, conclusion(text, prompts[i], math))
    return flags


def _check_of(family: str) -> str:
    """The check a family's record name carries (`"trust3+arithmetic"` → `"arithmetic"`)."""
    return family.split("+", 1)[1] if "+" in family else ""
