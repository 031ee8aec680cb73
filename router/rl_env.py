"""Routing as a sequence of decisions: the episode state, its transitions, and a simulator.

An episode routes one query. At each step the router either calls an expert it has not called
yet, or stops and answers with the answer of the expert it called last (a cascade: an escalation
replaces the earlier answer). The reward is the final answer's score minus
`cost_weight · total cost / cost_scale`, so `cost_weight` (λ) is unit-free as in `Policy`.

Everything is batched: a state holds `b` episodes at once, so training rolls out thousands of
episodes per step and serving uses the same code with `b = 1`.

- `EpisodeState`, `valid_actions`, `advance`, `observe` are the transitions and the
  observation; they need no outcomes, so the gateway drives a live cascade with them.
- `RecordedEnv` simulates episodes from recorded outcomes (per-query, per-model scores, costs and,
  where the data has responses, answer features), so training needs no live model.

Action `j < m` calls expert j (at most once each, at most `max_calls` calls, never past the
episode's budget); action `m` (`STOP`) answers. Stopping needs at least one answer; an episode in
which no expert is affordable ends with no answer (score 0, no cost).

Example::

    env = RecordedEnv(scores, costs, cost_scale=2e-4, max_calls=3)
    state = env.reset(rows=np.arange(4), cost_weight=np.full(4, 0.1))
    state, reward = env.step(state, np.array([2, 0, 1, 2]))   # each episode calls one expert
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from router.rl_answers import ANSWER_FEATURES, RecordedAnswers, with_agreement

if TYPE_CHECKING:
    from router.rl_teacher import ChainTeacher

__all__ = [
    "EpisodeState",
    "RecordedEnv",
    "advance",
    "glob_dim",
    "new_state",
    "observe",
    "step_dim",
    "valid_actions",
]


@dataclass(frozen=True)
class EpisodeState:
    """`b` episodes over `m` experts, each answer described by `k` features.

    `last[i]` is the expert whose answer episode i would return (-1: none yet); `spent[i]` the
    USD it has spent; `answers[i, j]` the features of expert j's answer once called (else 0).
    """

    called: np.ndarray  # (b, m) bool
    last: np.ndarray  # (b,) int, -1 before the first call
    spent: np.ndarray  # (b,) USD
    n_calls: np.ndarray  # (b,) int
    done: np.ndarray  # (b,) bool
    cost_weight: np.ndarray  # (b,) λ of each episode
    budget: np.ndarray  # (b,) USD cap, inf when none
    answers: np.ndarray  # (b, m, k)

    @property
    def size(self) -> int:
        return len(self.last)


def new_state(
    b: int,
    m: int,
    k: int,
    cost_weight: np.ndarray | float,
    budget: np.ndarray | float | None = None,
) -> EpisodeState:
    """`b` fresh episodes: nothing called, nothing spent."""
    return EpisodeState(
        called=np.zeros((b, m), dtype=bool),
        last=np.full(b, -1, dtype=np.int64),
        spent=np.zeros(b),
        n_calls=np.zeros(b, dtype=np.int64),
        done=np.zeros(b, dtype=bool),
        cost_weight=np.broadcast_to(np.asarray(cost_weight, dtype=np.float64), (b,)).copy(),
        budget=np.broadcast_to(
            np.asarray(np.inf if budget is None else budget, dtype=np.float64), (b,)
        ).copy(),
        answers=np.zeros((b, m, k)),
    )


def valid_actions(
    state: EpisodeState,
    est_costs: np.ndarray,
    max_calls: int,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """`(b, m + 1)` mask of the actions each episode may take now.

    A call is valid when the expert is uncalled, the episode is under `max_calls`, the
    estimated cost still fits the budget and (with `allowed`, `(m,)` bool) the expert is on the
    policy's shortlist; stop is valid once there is an answer. A finished episode may only
    "stop" (a no-op), so rows are never all False.
    """
    room = (state.n_calls < max_calls) & ~state.done
    fits = state.spent[:, None] + est_costs <= state.budget[:, None] * (1 + 1e-9)
    calls = ~state.called & fits & room[:, None]
    if allowed is not None:
        calls &= np.asarray(allowed, dtype=bool)[None, :]
    stop = (state.n_calls > 0) | state.done
    mask = np.concatenate([calls, stop[:, None]], axis=1)
    stuck = ~mask.any(axis=1)  # nothing affordable and nothing called: the episode is over
    mask[stuck, -1] = True
    return mask


def advance(
    state: EpisodeState,
    actions: np.ndarray,
    call_costs: np.ndarray,
    answer_features: np.ndarray | None = None,
) -> EpisodeState:
    """The state after each episode takes `actions[i]`; `call_costs[i]` is what the call cost.

    `call_costs` is `(b,)` USD of the expert called (ignored for stop); `answer_features` the
    `(b, k)` features of its answer, when known.
    """
    m = state.called.shape[1]
    calling = (actions < m) & ~state.done
    rows = np.flatnonzero(calling)
    called = state.called.copy()
    called[rows, actions[rows]] = True
    answers = state.answers
    if answer_features is not None and answers.shape[2] and len(rows):
        answers = answers.copy()
        answers[rows, actions[rows]] = answer_features[rows]
    return replace(
        state,
        called=called,
        last=np.where(calling, actions, state.last),
        spent=state.spent + np.where(calling, call_costs, 0.0),
        n_calls=state.n_calls + calling,
        done=state.done | (actions >= m),
        answers=answers,
    )


def glob_dim(k: int, hint: bool = False) -> int:
    """Width of the per-episode observation (see `observe`)."""
    return 5 + 2 * k + (1 if hint else 0)


def step_dim(k: int, prior: bool = False, hint: bool = False) -> int:
    """Width of the per-(episode, expert) observation (see `observe`)."""
    return 3 + k + (2 if prior else 0) + (1 if hint else 0)


def observe(
    state: EpisodeState,
    est_costs: np.ndarray,
    cost_scale: float,
    max_calls: int,
    prior: np.ndarray | None = None,
    hint: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What the policy sees besides the query and the descriptors.

    Returns `glob` `(b, 5 + 2k)`: λ, log λ, spent/scale, calls made/max, whether any answer
    exists, the mean features of the answers so far and those of the current answer; and `dyn`
    `(b, m, 3 + k)`: per expert, called or not, its estimated cost/scale, whether it gave the
    current answer, and its answer's features. With `prior` `(b, m)` (a one-shot router's
    predicted quality of each expert on the query, `router.rl_prior`), `dyn` gains two columns:
    that prediction, and its margin over the best prediction among the experts called so far
    (what escalating to this expert is expected to add). With `hint` `(b, m + 1)` (one-hot of
    what the best training chain for the episode's λ does next, `router.rl_teacher`), `dyn`
    gains its call column and `glob` its stop column: the policy can follow the chain, and
    learns where the query and the answers say to leave it.
    """
    b, m, _ = state.answers.shape
    scale = cost_scale if cost_scale > 0 else 1.0
    lam = state.cost_weight
    n = np.maximum(state.n_calls, 1)[:, None]
    mean_answer = state.answers.sum(axis=1) / n
    current = np.zeros((b, m))
    has = state.last >= 0
    current[np.flatnonzero(has), state.last[has]] = 1.0
    last_answer = np.einsum("bm,bmk->bk", current, state.answers)
    glob = np.concatenate(
        [
            lam[:, None],
            np.log10(lam + 1e-3)[:, None] / 3.0,
            (state.spent / scale)[:, None],
            (state.n_calls / max(max_calls, 1))[:, None],
            has[:, None].astype(np.float64),
            mean_answer,
            last_answer,
            *([] if hint is None else [hint[:, m:]]),
        ],
        axis=1,
    )
    parts = [
        state.called[..., None].astype(np.float64),
        (est_costs / scale)[..., None],
        current[..., None],
        state.answers,
    ]
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64)
        best_called = np.where(state.called, prior, 0.0).max(axis=1, keepdims=True)
        parts += [prior[..., None], (prior - best_called)[..., None]]
    if hint is not None:
        parts.append(hint[:, :m, None])
    return glob, np.concatenate(parts, axis=2)


class RecordedEnv:
    """Episodes simulated from recorded outcomes: `scores[i, j]`, `costs[i, j]` (USD).

    `prior[i, j]` (optional) is a one-shot router's out-of-fold predicted quality of expert j on
    query i, which the policy observes (`observe`); `allowed` (optional, `(m,)` bool) the
    shortlist of experts the policy may call; `teacher` (optional) the chains whose next step
    the policy observes as a hint (`observe`).

    `answer_features[i, j]` (optional, `(n, m, k)`) is what the router observes after calling
    expert j on query i. `answers` (optional, instead) are recorded responses' features
    (`router.rl_answers`): length and format per answer, plus agreement with the answers the
    episode has already seen, computed at each call.
    Rewards: `−λ · cost / cost_scale` at each call, plus the score of the current answer on stop.

    The policy observes, and the budget admits calls on, `predicted_costs[i, j]`: what the
    gateway could know before calling (`Router.predicted_costs`: prompt tokens and a predicted
    reply length). The realised `costs` are only what each call is charged. Without
    `predicted_costs`, each expert's mean recorded cost stands in for every query.
    """

    def __init__(
        self,
        scores: np.ndarray,
        costs: np.ndarray,
        cost_scale: float,
        max_calls: int,
        answer_features: np.ndarray | None = None,
        answers: RecordedAnswers | None = None,
        predicted_costs: np.ndarray | None = None,
        prior: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        teacher: ChainTeacher | None = None,
    ) -> None:
        if scores.shape != costs.shape:
            raise ValueError(f"scores {scores.shape} and costs {costs.shape} differ")
        if predicted_costs is not None and predicted_costs.shape != costs.shape:
            raise ValueError(f"predicted costs {predicted_costs.shape} and costs {costs.shape}")
        if answers is not None and answer_features is not None:
            raise ValueError("give answer_features or answers, not both")
        if answers is not None and answers.keys.shape != scores.shape:
            raise ValueError(f"answers {answers.keys.shape} and scores {scores.shape} differ")
        self.answers = answers
        self.scores = np.asarray(scores, dtype=np.float64)
        self.costs = np.asarray(costs, dtype=np.float64)
        self.predicted_costs = (
            np.broadcast_to(self.costs.mean(axis=0), self.costs.shape)
            if predicted_costs is None
            else np.asarray(predicted_costs, dtype=np.float64)
        )
        n, m = scores.shape
        self.answer_features = (
            np.zeros((n, m, 0)) if answer_features is None else np.asarray(answer_features)
        )
        if answers is not None:  # only its width: `step` computes agreement per episode
            self.answer_features = np.zeros((n, m, len(ANSWER_FEATURES)))
        if prior is not None and np.shape(prior) != scores.shape:
            raise ValueError(f"prior {np.shape(prior)} and scores {scores.shape} differ")
        if allowed is not None and np.shape(allowed) != (scores.shape[1],):
            raise ValueError(f"allowed {np.shape(allowed)} is not one flag per expert")
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.allowed = None if allowed is None else np.asarray(allowed, dtype=bool)
        self.teacher = teacher
        self.cost_scale = cost_scale if cost_scale > 0 else 1.0
        self.max_calls = max_calls
        self.rows = np.zeros(0, dtype=np.int64)

    @property
    def n_models(self) -> int:
        return int(self.scores.shape[1])

    @property
    def n_answer_features(self) -> int:
        return int(self.answer_features.shape[2])

    def reset(
        self,
        rows: np.ndarray,
        cost_weight: np.ndarray | float,
        budget: np.ndarray | float | None = None,
    ) -> EpisodeState:
        """Start one episode per query index in `rows`."""
        self.rows = np.asarray(rows, dtype=np.int64)
        return new_state(len(self.rows), self.n_models, self.n_answer_features, cost_weight, budget)

    def est_costs(self) -> np.ndarray:
        """`(b, m)` predicted cost of each expert on each episode's query (never the realised
        one: that is only charged, in `step`)."""
        return np.asarray(self.predicted_costs[self.rows])

    def valid(self, state: EpisodeState) -> np.ndarray:
        return valid_actions(state, self.est_costs(), self.max_calls, self.allowed)

    def observe(self, state: EpisodeState) -> tuple[np.ndarray, np.ndarray]:
        prior = None if self.prior is None else self.prior[self.rows]
        hint = None if self.teacher is None else self.teacher.hint(state)
        return observe(state, self.est_costs(), self.cost_scale, self.max_calls, prior, hint)

    def step(self, state: EpisodeState, actions: np.ndarray) -> tuple[EpisodeState, np.ndarray]:
        """Take `actions` (which must be valid); returns the new state and each reward."""
        actions = np.asarray(actions, dtype=np.int64)
        m = self.n_models
        pick = np.minimum(actions, m - 1)
        call_cost = self.costs[self.rows, pick]
        if self.answers is not None:
            features = with_agreement(self.answers, self.rows, pick, state.called)
        else:
            features = self.answer_features[self.rows, pick]
        was_done = state.done
        after = advance(state, actions, call_cost, features)
        calling = (actions < m) & ~was_done
        stopping = (actions >= m) & ~was_done
        reward = -state.cost_weight * np.where(calling, call_cost, 0.0) / self.cost_scale
        has = after.last >= 0
        answer = np.where(has, self.scores[self.rows, np.maximum(after.last, 0)], 0.0)
        reward = reward + np.where(stopping, answer, 0.0)
        return after, reward

    def final_scores(self, state: EpisodeState) -> np.ndarray:
        """Score of each episode's current answer (0 where it has none)."""
        has = state.last >= 0
        return np.where(has, self.scores[self.rows, np.maximum(state.last, 0)], 0.0)
