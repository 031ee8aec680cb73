"""The RL router's generalising inputs: out-of-fold prior, shortlist, chain warm start, serving.

A synthetic pool where the known optimum is an agreement cascade: two cheap experts, each
right on an independent 70% of the queries and wrong each in its own way, and a dear expert
that is always right. Calling both cheap ones and escalating only when they disagree is right
on every query at about half the dear expert's cost.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.rl import RLRouter
from router.rl_env import RecordedEnv
from router.rl_prior import out_of_fold, pareto_shortlist
from router.rl_teacher import chain_teacher

EXPERTS = [
    ExpertDescriptor("cheap-a-1b", 0.1, 0.1, descriptor="a small cheap model"),
    ExpertDescriptor("cheap-b-2b", 0.1, 0.1, descriptor="another small cheap model"),
    ExpertDescriptor("dear-70b", 1.0, 1.0, descriptor="a large strong model"),
]


def agreement_pool(n: int, seed: int) -> tuple[RoutingData, np.ndarray]:
    rng = np.random.default_rng(seed)
    right = np.stack([rng.random(n) < 0.7, rng.random(n) < 0.7, np.ones(n, dtype=bool)], 1)
    responses = np.empty((n, 3), dtype=object)
    for i in range(n):
        for j in range(3):
            responses[i, j] = f"work...\n#### {i if right[i, j] else 1000 + 10 * i + j}"
    data = RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"What is {i}?" for i in range(n)],
        tasks=["gsm8k"] * n,
        models=[e.name for e in EXPERTS],
        scores=right.astype(float),
        costs=np.tile([1e-5, 1e-5, 1e-3], (n, 1)),
        experts=EXPERTS,
        responses=responses,
    )
    x = rng.normal(size=(n, 16))
    return data, x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pareto_shortlist_keeps_only_undominated_experts() -> None:
    scores = np.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])  # means 0.5, 1, 0, 1
    costs = np.array([[1.0, 3.0, 2.0, 3.0], [1.0, 3.0, 2.0, 3.0]])
    # expert 2 is dominated by 0 (worse and dearer), expert 3 ties 1 and comes later
    assert pareto_shortlist(scores, costs).tolist() == [True, True, False, False]


def test_out_of_fold_prior_never_sees_its_own_outcomes() -> None:
    data, x = agreement_pool(60, seed=1)
    prior = out_of_fold("knn", {"k": 5}, data, x, folds=3, seed=0)
    fold = np.random.default_rng(0).permutation(60) % 3
    scores = data.scores.copy()
    scores[fold == 0] = 1.0 - scores[fold == 0]
    flipped = replace(data, scores=scores)
    again = out_of_fold("knn", {"k": 5}, flipped, x, folds=3, seed=0)
    assert np.allclose(prior[fold == 0], again[fold == 0])  # their own outcomes changed
    assert not np.allclose(prior[fold != 0], again[fold != 0])  # the others' neighbours did


def test_teacher_calls_in_order_and_stops_on_agreement() -> None:
    data, _ = agreement_pool(200, seed=2)
    router = RLRouter(descriptor_embedder="hashing", progress=False)
    answers = router.recorded_answers(data)
    scale = 1e-3
    teacher = chain_teacher(answers.keys, data.scores, data.costs, scale, None, max_calls=3)
    rows = np.arange(200)
    lam = np.full(200, 0.3)
    chain = teacher.pick(lam)
    assert {tuple(teacher.chains[c][teacher.chains[c] >= 0]) for c in chain} in (
        {(0, 1, 2)},
        {(1, 0, 2)},
    )
    env = RecordedEnv(data.scores, data.costs, scale, 3, answers=answers)
    state = env.reset(rows, lam)
    for _ in range(4):
        state, _ = env.step(state, teacher.actions(state, chain))
    agree = data.scores[:, 0] + data.scores[:, 1] == 2
    assert np.array_equal(state.n_calls, np.where(agree, 2, 3))
    assert env.final_scores(state).mean() == 1.0


@pytest.fixture(scope="module")
def warm() -> tuple[RLRouter, RoutingData, np.ndarray]:
    data, x = agreement_pool(400, seed=0)
    router = RLRouter(
        cost_weight=0.3,
        cost_weight_range=(0.1, 1.0),
        iterations=40,
        batch_size=192,
        bc_iterations=120,
        descriptor_embedder="hashing",
        progress=False,
        inputs="prior",
        prior_params={"k": 20},
        warm_start="chain",
        hint=True,
    )
    return router.fit(data, x), data, x


def test_warm_started_policy_escalates_exactly_when_the_cheap_answers_disagree(
    warm: tuple[RLRouter, RoutingData, np.ndarray],
) -> None:
    router, _, _ = warm
    test, x = agreement_pool(300, seed=5)  # new queries: nothing to memorise
    env = RecordedEnv(
        test.scores, test.costs, 1e-3, 3, answers=router.recorded_answers(test),
        predicted_costs=test.costs,
    )  # fmt: skip
    state = router.rollout(x, env, np.arange(300), 0.3)
    agree = test.scores[:, 0] + test.scores[:, 1] == 2
    assert (state.n_calls == np.where(agree, 2, 3)).mean() >= 0.95
    assert env.final_scores(state).mean() >= 0.95
    assert state.spent.mean() < 0.7e-3  # the dear expert alone costs 1e-3


def test_served_episode_sees_what_the_rollout_saw(
    warm: tuple[RLRouter, RoutingData, np.ndarray],
) -> None:
    router, _, _ = warm
    served = pickle.loads(pickle.dumps(router))
    test, x = agreement_pool(40, seed=6)
    env = RecordedEnv(
        test.scores, test.costs, 1e-3, 3, answers=router.recorded_answers(test),
        predicted_costs=test.costs,
    )  # fmt: skip
    state = router.rollout(x, env, np.arange(40), 0.3)
    assert test.responses is not None
    for i in range(40):
        episode = served.episode(x[i], test.costs[i], question=test.prompts[i], cost_weight=0.3)
        called = []
        while (expert := episode.next_expert()) is not None:
            j = served.models_.index(expert)
            episode.record(expert, float(test.costs[i, j]), test.responses[i, j])
            called.append(j)
        assert sorted(called) == np.flatnonzero(state.called[i]).tolist()
        assert called[-1] == state.last[i]


def test_unknown_inputs_and_warm_start_are_refused() -> None:
    data, x = agreement_pool(20, seed=3)
    with pytest.raises(ValueError, match="inputs must be"):
        RLRouter(inputs="raw", progress=False, descriptor_embedder="hashing").fit(data, x)
    bare = replace(data, responses=None)
    with pytest.raises(ValueError, match="needs recorded responses"):
        RLRouter(warm_start="chain", progress=False, descriptor_embedder="hashing").fit(bare, x)
