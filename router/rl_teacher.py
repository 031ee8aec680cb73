"""A teacher for the RL policy's warm start: the best agreement chain for each episode's λ.

REINFORCE from a random policy over 10–20 experts rarely samples the behaviour that pays on
recorded replies ("call two cheap experts; stop if they agree, else call a strong one",
`router.chains`): it takes a specific pair of calls *and* a stop that depends on their
agreement, and until both are found together every part of it looks like wasted cost. Chains
are found exactly by simulation (`router.chain_search.simulate`), so the policy is first
trained to imitate them (behaviour cloning), then REINFORCE improves on the imitation with
what a fixed chain cannot use: the query (through the prior) and the answers' features.

For an episode with cost weight λ the teacher is the chain of highest mean training return
`score − λ·cost/scale` among the candidates over the policy's shortlist; its actions follow
`router.chains.ChainEpisode`: call the members in order, stop once the latest reply's
conclusion is shared by `k` of the replies so far, or when the chain ends. (The policy answers
with its last reply, which after an agreement stop has the agreed conclusion.)

Example::

    teacher = chain_teacher(keys, scores, costs, cost_scale, allowed, max_calls=3)
    chain = teacher.pick(lam)                          # (b,) one chain per episode
    action = teacher.actions(state, chain)             # (b,) expert to call, or m: stop
    hint = teacher.hint(state)                         # (b, m + 1): what the policy observes
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from router.chain_search import candidates, simulate
from router.rl_env import EpisodeState

__all__ = ["ChainTeacher", "chain_teacher"]

#: With more shortlisted experts than this, k = 2 chains must escalate to rising reliability
#: (`router.chain_search.candidates`), which keeps the candidate count in the low thousands.
FREE_ORDER_MAX_EXPERTS = 12


@dataclass(frozen=True)
class ChainTeacher:
    """Candidate chains (expert indices, −1 padded), their k and mean training score and cost."""

    chains: np.ndarray  # (N, L)
    ks: np.ndarray  # (N,)
    mean_score: np.ndarray  # (N,)
    mean_cost: np.ndarray  # (N,) USD
    cost_scale: float

    def pick(self, cost_weight: np.ndarray) -> np.ndarray:
        """`(b,)` the chain of best mean return for each episode's λ."""
        lam = np.asarray(cost_weight, dtype=np.float64)[:, None]
        utility = self.mean_score[None, :] - lam * self.mean_cost[None, :] / self.cost_scale
        return np.asarray(utility.argmax(axis=1))

    def actions(self, state: EpisodeState, chain: np.ndarray) -> np.ndarray:
        """`(b,)` what chain `chain[e]` does next in episode e: an expert index, or m (stop).

        Read from the state alone, so the served cascade computes it as training did: the
        last answer's `format` (it concludes) and `agreement` (the share of the earlier
        answers with its conclusion) give its votes, `1 + agreement · (calls − 1)`; the next
        member is the first of the chain not yet called (a skipped expert is passed over).
        Needs answer features read with `key="conclusion"` (`router.rl_answers`).
        """
        b, m = state.called.shape
        rows = np.arange(b)
        members = self.chains[chain]  # (b, L), −1 padded
        has = state.last >= 0
        feats = state.answers[rows, np.maximum(state.last, 0)]
        votes = 1 + np.rint(feats[:, 2] * np.maximum(state.n_calls - 1, 0))
        agreed = has & (feats[:, 1] > 0) & (votes >= self.ks[chain])
        open_ = (members >= 0) & ~state.called[rows[:, None], np.maximum(members, 0)]
        first = open_.argmax(axis=1)
        nxt = np.where(open_.any(axis=1), members[rows, first], -1)
        return np.where(agreed | (nxt < 0) | state.done, m, nxt)

    def hint(self, state: EpisodeState) -> np.ndarray:
        """`(b, m + 1)` one-hot of what the best chain for each episode's λ does next."""
        b, m = state.called.shape
        out = np.zeros((b, m + 1))
        out[np.arange(b), self.actions(state, self.pick(state.cost_weight))] = 1.0
        return out

    def for_pool(self, trained: list[str], pool: list[str]) -> ChainTeacher:
        """The same chains over another pool's expert order (a member it lacks is dropped)."""
        index = np.array([pool.index(name) if name in pool else -1 for name in trained])
        mapped = np.where(self.chains >= 0, index[np.maximum(self.chains, 0)], -1)
        packed = np.full_like(mapped, -1)
        for i, row in enumerate(mapped):
            kept = row[row >= 0]
            packed[i, : len(kept)] = kept
        return replace(self, chains=packed)


def chain_teacher(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    cost_scale: float,
    allowed: np.ndarray | None,
    max_calls: int,
) -> ChainTeacher:
    """Every candidate chain of at most `max_calls` (≤ 4) experts over the `allowed` ones,
    simulated on the recorded replies `keys` `(n, m)` with `scores` and `costs`."""
    m = scores.shape[1]
    pool = np.flatnonzero(np.ones(m, dtype=bool) if allowed is None else allowed)
    if len(pool) == 0:
        raise ValueError("the shortlist is empty: nothing for the teacher to call")
    reliability = scores.mean(axis=0)
    rising = reliability[pool] if len(pool) > FREE_ORDER_MAX_EXPERTS else None
    local, ks = candidates(len(pool), min(max(max_calls, 1), 4), rising)
    chains = np.where(local >= 0, pool[np.maximum(local, 0)], -1)
    s, c = simulate(keys, scores, costs, reliability, chains, ks)
    return ChainTeacher(chains, ks, s.mean(axis=0), c.mean(axis=0), cost_scale)
