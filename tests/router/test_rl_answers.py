"""The RL router's answer features come from the canonical dataset's `response` column."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from router.rl import RLRouter
from router.rl_answers import ANSWER_FEATURES, answer_features, recorded_answers
from router.rl_env import RecordedEnv, observe

MODELS = ("cheap", "dear")


def to_routing_data(frame: Any, models: list[str] | None = None) -> Any:
    """`training.dataset.to_routing_data`, imported when a test runs."""
    from training.dataset import to_routing_data as pivot

    return pivot(frame, models=models)


#: (prompt, cheap's response, dear's response); dear's always concludes with a marker.
ROWS = (
    ("What is 2 + 3?", "2 + 3 = 5\n#### 5", "#### 5"),
    ("What is 4 * 5?", "I think it is 4 * 5 = 21, roughly", "The answer is 20."),
    ("Pick one: (A) red (B) blue", "Blue.", "The answer is (B)"),
)


def frame(with_responses: bool = True) -> Any:
    import pandas as pd

    from training.dataset import validate

    rows = []
    for i, (prompt, *answers) in enumerate(ROWS):
        for model, text in zip(MODELS, answers, strict=True):
            rows.append(
                {
                    "query_id": f"q{i}",
                    "prompt": prompt,
                    "task": "gsm8k",
                    "model": model,
                    "score": 1.0 if model == "dear" or i == 0 else 0.0,
                    "cost_usd": 1e-5 if model == "cheap" else 1e-3,
                    "cost_estimated": True,
                    "response": text if with_responses else None,
                }
            )
    return validate(pd.DataFrame(rows), "<test>")


def test_routing_data_carries_the_response_column_in_model_order() -> None:
    data = to_routing_data(frame(), models=["dear", "cheap"])
    assert data.responses is not None
    assert data.responses[1].tolist() == [ROWS[1][2], ROWS[1][1]]
    assert to_routing_data(frame(with_responses=False)).responses is None


def test_features_are_length_format_and_agreement_of_the_response_text() -> None:
    data = to_routing_data(frame())
    assert data.responses is not None
    answers = recorded_answers(data.responses, data.prompts)
    cheap_1 = ROWS[1][1]
    # Length; the format needs a final-answer marker ("roughly 21" has none); a multiple-choice
    # prompt's format is its option letter ("Blue." names none).
    assert answers.static[1, 0].tolist() == [math.log1p(len(cheap_1)) / 8.0, 0.0]
    assert answers.static[:, 1, 1].tolist() == [1.0, 1.0, 1.0]
    assert answers.static[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    # The simulator adds agreement with the answers already seen, as the live function does.
    env = RecordedEnv(data.scores, data.costs, 1e-3, max_calls=2, answers=answers)
    assert env.n_answer_features == len(ANSWER_FEATURES) == 3
    state = env.reset(np.arange(3), cost_weight=0.1)
    state, _ = env.step(state, np.zeros(3, dtype=np.int64))  # cheap first: nothing to agree with
    state, _ = env.step(state, np.ones(3, dtype=np.int64))  # then dear
    assert state.answers[:, 0, 2].tolist() == [0.0, 0.0, 0.0]
    assert state.answers[:, 1, 2].tolist() == [1.0, 0.0, 0.0]  # 5 = 5; 21 ≠ 20
    for i, (prompt, cheap, dear) in enumerate(ROWS):
        assert np.allclose(state.answers[i, 0], answer_features(cheap, prompt))
        assert np.allclose(state.answers[i, 1], answer_features(dear, prompt, [cheap]))
    _, dyn = observe(state, env.est_costs(), 1e-3, 2)
    assert np.array_equal(dyn[:, :, 3:], state.answers)  # the policy sees them


def test_rl_trains_on_response_features_and_evaluation_requires_them() -> None:
    from training.rl_eval import evaluate_steps

    data = to_routing_data(frame())
    x = np.eye(3, 8)
    router = RLRouter(
        iterations=2, batch_size=8, descriptor_embedder="hashing", progress=False
    ).fit(data, x)
    assert router.n_answer_features_ == 3 and router.observes_answers
    assert len(evaluate_steps(router, x, data).metrics["curve"]) > 0
    bare = to_routing_data(frame(with_responses=False))
    with pytest.raises(Exception, match="records no responses"):
        evaluate_steps(router, x, bare)
    plain = RLRouter(iterations=2, batch_size=8, descriptor_embedder="hashing", progress=False)
    assert plain.fit(bare, x).n_answer_features_ == 0 and not plain.observes_answers


def test_validation_holds_out_queries_and_keeps_the_best_parameters() -> None:
    data = to_routing_data(frame())
    x = np.eye(3, 8)
    router = RLRouter(
        iterations=4,
        batch_size=8,
        descriptor_embedder="hashing",
        progress=False,
        validation=0.34,
        validate_every=2,
    ).fit(data, x)
    assert [("validation_return" in h) for h in router.history_] == [False, True, False, True]
    with pytest.raises(ValueError, match="leaves a split empty"):
        RLRouter(iterations=1, descriptor_embedder="hashing", progress=False, validation=0.01).fit(
            data, x
        )
