"""The RL router live: a step-by-step episode the gateway drives, and learning from feedback.

`LiveEpisode` is one query's cascade (a `router.episodes.Episode`): `next_expert()` says whom
to call (None: answer now), `record()` what the call cost and answered, `skip()` that an expert
failed. The budget is hard: an expert
whose estimated cost does not fit what is left is never proposed (and the gateway caps the
call's tokens so the actual cost fits too).

`learn(router, trace, score)` is the contextual-bandit update from a client's feedback on a
served request: one REINFORCE step on the policy's output layers (call, stop, value) with
return `score − λ·cost/scale` against the learned baseline, importance-weighted by
`π(a)/μ(a)` (clipped at 5) because the gateway acts greedily with ε-exploration (μ) rather than
by sampling π; and one logistic step of the quality head toward the score. Only the output
layers move (`router.rl_net.HEAD_PARAMS`): a few numbers per feedback, cheap in numpy, and
easy to persist (`online_state`, `load_online_state`).

Example::

    episode = LiveEpisode(router, embedding, est_costs, cost_weight=0.1, budget=1e-3)
    while (expert := episode.next_expert()) is not None:
        episode.record(expert, cost_usd=call(expert))
    learn(router, episode.trace(), score=0.8)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from router.rl_env import advance, new_state
from router.rl_net import HEAD_PARAMS, softmax

if TYPE_CHECKING:
    from router.rl import RLRouter

__all__ = ["LiveEpisode", "Step", "Trace", "learn", "load_online_state", "online_state"]

#: Largest importance weight π(a)/μ(a) in a feedback update.
MAX_IMPORTANCE = 5.0


@dataclass(frozen=True)
class Step:
    """One decision: the output layers' inputs, the policy's and the behaviour's probability."""

    z: np.ndarray  # (m, h) per-expert features before the call head
    s: np.ndarray  # (h,) features before the stop and value heads
    probs: np.ndarray  # (m + 1,) π over actions (0 where invalid)
    action: int
    behaviour: float  # μ(action): probability the gateway took it with


@dataclass(frozen=True)
class Trace:
    """What feedback on an episode needs: its decisions, cost, λ, and the answer's features."""

    steps: tuple[Step, ...]
    cost_usd: float
    cost_weight: float
    final_u: np.ndarray | None  # (h,) quality-head input of the expert that answered


class LiveEpisode:
    """A cascade for one query over `router.models_`; `est_costs` aligns with them.

    With probability `explore` the first call is drawn uniformly from the affordable experts
    (ε-greedy); every other decision is the policy's greedy choice.
    """

    def __init__(
        self,
        router: RLRouter,
        embedding: np.ndarray,
        est_costs: np.ndarray,
        cost_weight: float | None = None,
        budget: float | None = None,
        explore: float = 0.0,
        rng: np.random.Generator | None = None,
        question: str = "",
    ) -> None:
        self.router = router
        self.question = question
        self._texts: list[str] = []  # the answers so far, for the answer features' agreement
        self.x = router.network_input(np.asarray(embedding, dtype=np.float64)[None, :],
                                      [question])  # fmt: skip
        self.costs = np.asarray(est_costs, dtype=np.float64)[None, :]
        self.cost_weight = router.cost_weight if cost_weight is None else cost_weight
        self.explore = explore
        self.rng = rng or np.random.default_rng()
        m = len(router.models_)
        self.state = new_state(1, m, router.n_answer_features_, self.cost_weight, budget)
        self.steps: list[Step] = []
        self._final_u: np.ndarray | None = None
        self._pending: tuple[int, Step] | None = None

    def next_expert(self) -> str | None:
        """The expert to call next, or None to answer with the last answer (or give up)."""
        out, mask = self.router.step(self.x, self.costs, self.state)
        probs = softmax(out.logits)[0]
        valid = mask[0]
        m = len(self.router.models_)
        action = int(out.logits[0].argmax())
        behaviour = 1.0
        calls = np.flatnonzero(valid[:m])
        if self.explore > 0 and not self.steps and len(calls):
            greedy_share = 1.0 - self.explore
            if self.rng.random() < self.explore:
                action = int(self.rng.choice(calls))
            behaviour = self.explore / len(calls) + (greedy_share if action == out.logits[
                0].argmax() else 0.0)  # fmt: skip
        step = Step(z=out.z[0], s=out.s[0], probs=probs, action=action, behaviour=behaviour)
        if action >= m:
            self.steps.append(step)
            self.state = replace(self.state, done=np.array([True]))
            return None
        self._pending = (action, step)
        return self.router.models_[action]

    def record(
        self,
        expert: str,
        cost_usd: float,
        answer_text: str | None = None,
        answer_features: np.ndarray | None = None,
    ) -> None:
        """`expert` (the one `next_expert` proposed) answered `answer_text`, at `cost_usd`.

        A policy trained on answer features (`RLRouter.observes_answers`) observes those of
        `answer_text` (`router.rl_answers.answer_features`, against the answers before it)
        unless `answer_features` gives them."""
        if answer_features is None and answer_text is not None and self.router.observes_answers:
            from router.rl_answers import answer_features as features_of

            answer_features = features_of(
                answer_text,
                self.question,
                self._texts,
                getattr(self.router, "answer_key_", "normalise"),
                getattr(self.router, "math_", False),
            )
        if answer_text is not None:
            self._texts.append(answer_text)
        action, step = self._take(expert)
        feats = None if answer_features is None else np.asarray(answer_features)[None, :]
        self.state = advance(self.state, np.array([action]), np.array([cost_usd]), feats)
        self.steps.append(step)
        _, u = _quality_inputs(self.router, self.x, action)
        self._final_u = u

    def skip(self, expert: str) -> None:
        """`expert` failed (down, timed out): never propose it again; nothing was spent."""
        action, _ = self._take(expert)
        called = self.state.called.copy()
        called[0, action] = True
        self.state = replace(self.state, called=called)

    def exclude(self, experts: set[str]) -> None:
        """Never propose these experts (known to be down)."""
        called = self.state.called.copy()
        for j, name in enumerate(self.router.models_):
            called[0, j] |= name in experts
        self.state = replace(self.state, called=called)

    def last_call(self) -> bool:
        """Whether the call just proposed must be the last (then its reply is the answer)."""
        made = int(self.state.n_calls[0])
        left = len(self.router.models_) - int(self.state.called[0].sum())
        return made + 1 >= self.router.max_calls or left <= 1

    def answer_expert(self) -> str | None:
        """The last expert that answered (the policy answers with the last answer)."""
        for step in reversed(self.steps):
            if step.action < len(self.router.models_):
                return self.router.models_[step.action]
        return None

    def _take(self, expert: str) -> tuple[int, Step]:
        if self._pending is None or self.router.models_[self._pending[0]] != expert:
            raise ValueError(f"{expert!r} was not the expert this episode proposed")
        pending, self._pending = self._pending, None
        return pending

    @property
    def spent(self) -> float:
        return float(self.state.spent[0])

    @property
    def remaining(self) -> float:
        return float(self.state.budget[0] - self.state.spent[0])

    def trace(self) -> Trace:
        return Trace(tuple(self.steps), self.spent, self.cost_weight, self._final_u)


def _quality_inputs(router: RLRouter, x: np.ndarray, action: int) -> tuple[float, np.ndarray]:
    from router.rl_net import NUMPY_OPS, quality_logits

    logits, u = quality_logits(router.weights, x, router.expert_matrix_, NUMPY_OPS)
    return float(logits[0, action]), np.asarray(u[0, action])


def learn(router: RLRouter, trace: Trace, score: float, lr: float = 0.05) -> None:
    """Update `router`'s output layers from a client's `score` in [0, 1] for this episode."""
    if not trace.steps:
        return
    w = router.weights
    head = {name: np.array(w[name], dtype=np.float64, copy=True) for name in HEAD_PARAMS}
    assert router.cost_scale_ is not None
    scale = router.cost_scale_ if router.cost_scale_ > 0 else 1.0
    ret = score - trace.cost_weight * trace.cost_usd / scale
    m = len(router.models_)
    for step in trace.steps:
        value = float(step.s @ head["w_v"] + head["c_v"])
        advantage = ret - value
        rho = min(MAX_IMPORTANCE, step.probs[step.action] / max(step.behaviour, 1e-6))
        onehot = np.zeros(m + 1)
        onehot[step.action] = 1.0
        grad = onehot - step.probs  # ∂ log π(a) / ∂ logits
        gain = lr * rho * advantage
        head["w_call"] += gain * (grad[:m] @ step.z)
        head["c_call"] += gain * grad[:m].sum()
        head["w_stop"] += gain * grad[m] * step.s
        head["c_stop"] += gain * grad[m]
        head["w_v"] += lr * advantage * step.s
        head["c_v"] += lr * advantage
    if trace.final_u is not None:
        logit = float(trace.final_u @ head["wu"] + head["cu"])
        err = score - 1.0 / (1.0 + np.exp(-logit))
        head["wu"] += lr * err * trace.final_u
        head["cu"] += lr * err
    router.online_ = head
    router.online_updates_ += 1


def online_state(router: RLRouter) -> dict[str, np.ndarray]:
    """The feedback-updated output layers and the update count, for `np.savez`."""
    return {**router.online_, "updates": np.array(router.online_updates_)}


def load_online_state(router: RLRouter, state: dict[str, np.ndarray]) -> None:
    """Restore what `online_state` saved; refuses arrays of another shape (another model)."""
    head = {k: np.asarray(state[k], dtype=np.float64) for k in HEAD_PARAMS if k in state}
    for k, v in head.items():
        if v.shape != np.shape(router.params_[k]):
            want = np.shape(router.params_[k])
            raise ValueError(
                f"online state {k} has shape {v.shape}, the router's is {want}: "
                "it belongs to another router"
            )
    router.online_ = head
    router.online_updates_ = int(state.get("updates", np.array(0)))
