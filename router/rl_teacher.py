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
    action = teacher.actions(state, rows, chain)       # (b,) expert to call, or m: stop
"""

from __future__ import annotations

from dataclasses import dataclass

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
    keys: np.ndarray  # (n, m) conclusion code of each recorded reply, −1: none
    cost_scale: float

    def pick(self, cost_weight: np.ndarray) -> np.ndarray:
        """`(b,)` the chain of best mean return for each episode's λ."""
        lam = np.asarray(cost_weight, dtype=np.float64)[:, None]
        utility = self.mean_score[None, :] - lam * self.mean_cost[None, :] / self.cost_scale
        return np.asarray(utility.argmax(axis=1))

    def actions(self, state: EpisodeState, rows: np.ndarray, chain: np.ndarray) -> np.ndarray:
        """`(b,)` what the chain does next in each episode: an expert index, or m (stop)."""
        b, m = state.called.shape
        t = state.n_calls
        members = self.chains[chain]  # (b, L)
        k = self.ks[chain]
        keys = self.keys[rows]  # (b, m)
        has = state.last >= 0
        last_key = np.where(has, keys[np.arange(b), np.maximum(state.last, 0)], -1)
        votes = ((keys == last_key[:, None]) & state.called).sum(axis=1)
        agreed = has & (last_key >= 0) & (votes >= k)
        width = members.shape[1]
        nxt = np.where(t < width, members[np.arange(b), np.minimum(t, width - 1)], -1)
        return np.where(agreed | (nxt < 0) | state.done, m, nxt)


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
    return ChainTeacher(chains, ks, s.mean(axis=0), c.mean(axis=0), keys, cost_scale)
