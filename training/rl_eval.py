"""Evaluating a multi-step router (`rl`) by running its policy on the test set.

A one-shot router is evaluated from its predicted quality (`training.evaluate.sweep`); a policy
that may call several experts is evaluated by running its episodes on the recorded test outcomes
at each λ of the sweep: a point is (mean USD spent over every call, mean score of the answer
returned). `coe eval` reports it as `<name>-steps` beside the router's one-shot entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.costs import prompt_tokens_of
from router.data import RoutingData
from router.rl_answers import recorded_answers
from router.rl_env import RecordedEnv
from training.errors import CoeTrainingError
from training.evaluate import COST_WEIGHTS, RouterResult, evaluate_curve

__all__ = ["evaluate_steps", "is_multi_step", "recorded_env"]


def is_multi_step(router: Any) -> bool:
    """Whether `router` runs episodes itself (has `rollout`), rather than scoring once."""
    return callable(getattr(router, "rollout", None))


def evaluate_steps(
    router: Any,
    embeddings: np.ndarray,
    data: RoutingData,
    weights: Sequence[float] = COST_WEIGHTS,
    budget: float | None = None,
) -> RouterResult:
    """Metrics of `router`'s greedy episodes on `data` as λ sweeps `weights`.

    The curve's rows carry a fourth value, the mean number of calls per query. A policy trained
    on answer features observes those of `data`'s recorded responses, which it must then have.
    """
    env = recorded_env(router, embeddings, data)
    rows = np.arange(len(data))
    curve, picks = [], []
    for w in weights:
        state = router.rollout(embeddings, env, rows, float(w), budget)
        final = env.final_scores(state)
        curve.append(
            [float(state.spent.mean()), float(final.mean()), float(w), float(state.n_calls.mean())]
        )
        picks.append(np.maximum(state.last, 0))
    return evaluate_curve(curve, picks, data)


def recorded_env(router: Any, embeddings: np.ndarray, data: RoutingData) -> RecordedEnv:
    """The episodes of `router` on `data`'s recorded outcomes: the answer features it was
    trained to observe (an error when `data` records no responses) and the costs it predicts
    from what it knows at request time (realised costs are only charged)."""
    answers = None
    if getattr(router, "observes_answers", False):
        if data.responses is None:
            raise CoeTrainingError(
                f"router {router.name!r} was trained on answer features (response length, "
                "format, agreement) but the test data records no responses"
            )
        reader = getattr(router, "recorded_answers", None)
        answers = reader(data) if reader else recorded_answers(data.responses, data.prompts)
    return RecordedEnv(
        data.scores,
        data.costs,
        router.cost_scale_,
        router.max_calls,
        answers=answers,
        predicted_costs=router.predicted_costs(embeddings, prompt_tokens_of(data)),
    )
