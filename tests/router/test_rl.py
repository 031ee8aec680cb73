"""The RL router: environment, learning on problems with a known optimum, the cost cap, feedback.

Training runs are small (a few hundred episodes a step, ~150 steps) on 16-dimensional synthetic
embeddings with the torch-free hashing descriptor embedder, so each takes seconds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.base import Router
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.rl import RLRouter, parameter_count_b
from router.rl_env import RecordedEnv, advance, new_state, observe, valid_actions
from router.rl_net import softmax
from router.rl_online import LiveEpisode, learn, load_online_state, online_state

CHEAP = ExpertDescriptor("cheap-1b", 0.1, 0.1, descriptor="a small, fast, cheap model")
DEAR = ExpertDescriptor("dear-70b", 1.0, 1.0, descriptor="a large, strong, expensive model")


def synthetic(n: int, seed: int, cascade: bool = False) -> tuple[RoutingData, np.ndarray, Any]:
    """Two topics; `dear` is always right at 10× the price. Without `cascade`, `cheap` is right
    exactly on topic 0 (visible in the embedding); with it, on a random half of the queries, and
    only its answer's feature (1 = right) tells which."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n) % 2
    x = np.zeros((n, 16))
    x[np.arange(n), topic] = 1.0
    x += rng.normal(0, 0.15, x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    right = rng.random(n) < 0.5 if cascade else topic == 0
    scores = np.stack([right, np.ones(n, dtype=bool)], axis=1).astype(float)
    data = RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"question {i}" for i in range(n)],
        tasks=[f"topic{t}" for t in topic],
        models=["cheap-1b", "dear-70b"],
        scores=scores,
        costs=np.tile([1e-5, 1e-4], (n, 1)),
        experts=[CHEAP, DEAR],
    )
    features = scores[:, :, None].copy() if cascade else None
    return data, x.astype(np.float32), features


def small(**params: object) -> RLRouter:
    defaults: dict[str, object] = {
        "cost_weight": 0.3,
        "cost_weight_range": (0.1, 1.0),
        "iterations": 150,
        "batch_size": 192,
        "descriptor_embedder": "hashing",
        "progress": False,
    }
    return RLRouter(**{**defaults, **params})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained() -> tuple[RLRouter, RoutingData, np.ndarray]:
    data, x, _ = synthetic(400, seed=0)
    return small().fit(data, x), data, x


# -- the environment ----------------------------------------------------------------------------


def hand_env(max_calls: int = 2) -> RecordedEnv:
    scores = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    costs = np.array([[1.0, 4.0, 2.0], [1.0, 4.0, 2.0]])
    return RecordedEnv(scores, costs, cost_scale=4.0, max_calls=max_calls)


def test_env_rewards_are_score_minus_weighted_cost() -> None:
    env = hand_env()
    state = env.reset(np.array([0, 1]), cost_weight=np.array([0.5, 2.0]))
    assert env.valid(state)[:, -1].tolist() == [False, False]  # no answer yet: cannot stop
    state, r = env.step(state, np.array([0, 0]))
    assert r == pytest.approx([-0.5 * 1 / 4, -2.0 * 1 / 4])
    assert state.spent.tolist() == [1.0, 1.0] and state.last.tolist() == [0, 0]
    state, r = env.step(state, np.array([1, 3]))  # query 0 escalates; query 1 stops
    assert r == pytest.approx([-0.5 * 4 / 4, 1.0])
    assert state.done.tolist() == [False, True] and state.last.tolist() == [1, 0]
    mask = env.valid(state)
    assert mask[0].tolist() == [False, False, False, True]  # max_calls=2 reached: only stop
    state, r = env.step(state, np.array([3, 3]))
    assert r == pytest.approx([1.0, 0.0])  # the escalated answer counts; a done episode earns 0
    assert env.final_scores(state).tolist() == [1.0, 1.0]


def test_budget_masks_calls_and_an_unaffordable_query_ends_with_no_answer() -> None:
    env = hand_env(max_calls=3)
    state = env.reset(np.array([0, 0]), cost_weight=0.0, budget=np.array([3.0, 0.5]))
    mask = env.valid(state)
    assert mask[0].tolist() == [True, False, True, False]  # 4 USD does not fit 3
    assert mask[1].tolist() == [False, False, False, True]  # nothing fits: stop is forced
    state, _ = env.step(state, np.array([2, 3]))
    assert env.valid(state)[0].tolist() == [True, False, False, True]  # 2 + 1 fits, 2 + 4 not
    assert state.done[1] and env.final_scores(state)[1] == 0.0 and state.spent[1] == 0.0


def test_observation_carries_lambda_cost_and_answer_features() -> None:
    state = new_state(1, 3, 2, cost_weight=0.5)
    state = advance(state, np.array([1]), np.array([2.0]), np.array([[0.3, 1.0]]))
    glob, dyn = observe(state, np.array([[1.0, 4.0, 2.0]]), cost_scale=4.0, max_calls=2)
    assert glob.shape == (1, 9) and dyn.shape == (1, 3, 5)
    assert glob[0, 0] == 0.5 and glob[0, 2] == 0.5 and glob[0, 3] == 0.5 and glob[0, 4] == 1
    assert glob[0, -2:].tolist() == [0.3, 1.0]  # the current answer's features
    assert dyn[0, 1].tolist() == [1.0, 1.0, 1.0, 0.3, 1.0]
    assert dyn[0, 0].tolist() == [0.0, 0.25, 0.0, 0.0, 0.0]
    assert valid_actions(state, np.zeros((1, 3)), max_calls=1)[0].tolist() == [0, 0, 0, 1]


# -- learning -----------------------------------------------------------------------------------


def test_policy_learns_the_known_optimum(trained: tuple[RLRouter, RoutingData, np.ndarray]) -> None:
    router, _, _ = trained
    test, x, _ = synthetic(60, seed=1)
    env = RecordedEnv(test.scores, test.costs, router.cost_scale_ or 1.0, router.max_calls)
    state = router.rollout(x, env, np.arange(60), cost_weight=0.3)
    topic = np.arange(60) % 2
    # Optimum at λ=0.3: topic 0 → cheap (1 − 0.03), topic 1 → dear (1 − 0.3); one call each.
    assert (state.last == np.where(topic == 0, 0, 1)).all()
    assert (state.n_calls == 1).all()
    quality = router.score(x, test.prompts)
    assert quality.shape == (60, 2)
    assert (quality[topic == 0, 0] > 0.8).all() and (quality[topic == 1, 0] < 0.2).all()
    assert router.plan(x[0], test.costs[0]) == ["cheap-1b"]
    assert router.plan(x[1], test.costs[1]) == ["dear-70b"]


def test_policy_learns_to_escalate_when_the_answer_looks_wrong() -> None:
    data, x, features = synthetic(400, seed=0, cascade=True)
    router = small().fit(data, x, answer_features=features)
    test, xt, ft = synthetic(60, seed=1, cascade=True)
    env = RecordedEnv(test.scores, test.costs, router.cost_scale_ or 1.0, router.max_calls, ft)
    state = router.rollout(xt, env, np.arange(60), cost_weight=0.3)
    cheap_right = test.scores[:, 0] == 1
    # Cheap first (0.5·0.97 + 0.5·0.67 = 0.82 beats dear alone, 0.70); escalate only if wrong.
    assert (state.n_calls == np.where(cheap_right, 1, 2)).all()
    assert env.final_scores(state).mean() == 1.0


def test_training_is_deterministic_given_the_seed() -> None:
    data, x, _ = synthetic(100, seed=0)
    a = small(iterations=5).fit(data, x)
    b = small(iterations=5).fit(data, x)
    c = small(iterations=5, seed=1).fit(data, x)
    assert all(np.array_equal(a.params_[k], b.params_[k]) for k in a.params_)
    assert not np.array_equal(a.params_["Wq"], c.params_["Wq"])


def test_numpy_forward_matches_torch() -> None:
    import torch

    from router.rl_net import forward
    from router.rl_train import _torch_ops

    data, x, _ = synthetic(50, 0)
    router = small(iterations=3).fit(data, x)
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(4, 16))
    state = new_state(4, 2, 0, cost_weight=0.2)
    costs = np.tile([1e-5, 1e-4], (4, 1))
    out, mask = router.step(xb, costs, state)
    glob, dyn = observe(state, costs, router.cost_scale_ or 1.0, router.max_calls)
    params = {k: torch.tensor(v) for k, v in router.params_.items()}
    tout = forward(
        params,
        torch.tensor(xb),
        torch.tensor(router.expert_matrix_),
        torch.tensor(glob),
        torch.tensor(dyn),
        torch.from_numpy(mask),
        _torch_ops(),
    )
    np.testing.assert_allclose(tout.logits.numpy(), out.logits, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(tout.value.numpy(), out.value, rtol=1e-6, atol=1e-9)


# -- the cost cap -------------------------------------------------------------------------------


def test_cost_cap_is_never_exceeded(trained: tuple[RLRouter, RoutingData, np.ndarray]) -> None:
    router, _, _ = trained
    rng = np.random.default_rng(3)
    test, x, _ = synthetic(200, seed=2)
    for lam in (0.0, 0.3, 3.0):
        budgets = rng.choice([0.0, 5e-6, 1e-5, 5e-5, 1e-4, 2e-4], size=200)
        costs = test.costs * rng.uniform(0.5, 2.0, test.costs.shape)
        env = RecordedEnv(test.scores, costs, router.cost_scale_ or 1.0, router.max_calls)
        state = router.rollout(x, env, np.arange(200), lam, budget=budgets)
        assert (state.spent <= budgets * (1 + 1e-9)).all()
        for i in range(0, 200, 7):
            plan = router.plan(x[i], costs[i], lam, budget=budgets[i])
            spent = sum(costs[i, router.models_.index(e)] for e in plan)
            assert spent <= budgets[i] * (1 + 1e-9)
            if budgets[i] < costs[i].min():
                assert plan == []


def test_live_episode_respects_the_budget_and_skips_failed_experts(
    trained: tuple[RLRouter, RoutingData, np.ndarray],
) -> None:
    router, data, x = trained
    episode = LiveEpisode(router, x[1], data.costs[1], budget=2e-4)
    assert episode.next_expert() == "dear-70b"
    episode.skip("dear-70b")  # down: the cascade falls back to what is left
    assert episode.next_expert() == "cheap-1b"
    episode.record("cheap-1b", cost_usd=1e-5)
    assert episode.next_expert() is None
    assert episode.spent == 1e-5
    poor = LiveEpisode(router, x[1], data.costs[1], budget=5e-6)
    assert poor.next_expert() is None and poor.trace().steps[0].action == 2


# -- feedback -----------------------------------------------------------------------------------


def _first_call_prob(router: RLRouter, x: np.ndarray, costs: np.ndarray, expert: int) -> float:
    state = new_state(1, len(router.models_), 0, router.cost_weight)
    out, _ = router.step(x[None, :], costs[None, :], state)
    return float(softmax(out.logits)[0, expert])


def test_feedback_moves_the_policy_in_the_expected_direction(
    trained: tuple[RLRouter, RoutingData, np.ndarray],
) -> None:
    base, data, x = trained
    for score, direction in ((1.0, 1), (0.0, -1)):
        router = copy.deepcopy(base)
        before = _first_call_prob(router, x[0], data.costs[0], 0)
        quality_before = router.score(x[:1], ["q"])[0, 0]
        for _ in range(20):
            episode = LiveEpisode(router, x[0], data.costs[0], explore=1.0,
                                  rng=np.random.default_rng(0))  # fmt: skip
            while (expert := episode.next_expert()) is not None:
                if expert != "cheap-1b":
                    episode.skip(expert)
                    continue
                episode.record(expert, 1e-5)
            learn(router, episode.trace(), score)
        after = _first_call_prob(router, x[0], data.costs[0], 0)
        quality_after = router.score(x[:1], ["q"])[0, 0]
        assert np.sign(after - before) == direction, (score, before, after)
        assert np.sign(quality_after - quality_before) == direction
        assert router.online_updates_ == 20
    assert base.online_updates_ == 0


def test_online_state_round_trips_and_refuses_another_router(
    trained: tuple[RLRouter, RoutingData, np.ndarray],
) -> None:
    router, data, x = trained
    updated = copy.deepcopy(router)
    episode = LiveEpisode(updated, x[0], data.costs[0])
    expert = episode.next_expert()
    assert expert is not None
    episode.record(expert, 1e-5)
    learn(updated, episode.trace(), 0.0)
    state = online_state(updated)
    fresh = copy.deepcopy(router)
    load_online_state(fresh, state)
    assert np.allclose(fresh.score(x[:5], ["q"] * 5), updated.score(x[:5], ["q"] * 5))
    assert not np.allclose(fresh.score(x[:5], ["q"] * 5), router.score(x[:5], ["q"] * 5))
    other = small(hidden=8, iterations=2).fit(data, x)
    with pytest.raises(ValueError, match="another router"):
        load_online_state(other, state)


# -- artifacts and the pool ---------------------------------------------------------------------


def test_save_load_and_new_experts_through_descriptors(
    trained: tuple[RLRouter, RoutingData, np.ndarray], tmp_path: Path
) -> None:
    router, _, x = trained
    path = tmp_path / "rl.pkl"
    router.save(path)
    loaded = Router.load(path)
    assert isinstance(loaded, RLRouter)
    np.testing.assert_allclose(loaded.score(x[:3], ["q"] * 3), router.score(x[:3], ["q"] * 3))
    newcomer = ExpertDescriptor("mid-13b", 0.5, 0.5, descriptor="a medium model")
    loaded.check_pool([DEAR, newcomer, CHEAP])  # adopts the pool, unseen expert included
    assert loaded.models_ == ["dear-70b", "mid-13b", "cheap-1b"]
    assert loaded.new_experts() == ["mid-13b"]
    quality = loaded.score(x[:3], ["q"] * 3)
    assert quality.shape == (3, 3)
    np.testing.assert_allclose(quality[:, [2, 0]], router.score(x[:3], ["q"] * 3))


def test_parameter_count_from_name_or_descriptor() -> None:
    assert parameter_count_b(ExpertDescriptor("qwen2.5-7b-instruct", 0, 0)) == 7.0
    assert parameter_count_b(ExpertDescriptor("llama-3.1-nemotron-51b-instruct", 0, 0)) == 51.0
    text = ExpertDescriptor("x", 0, 0, descriptor="an 8-billion parameter model")
    assert parameter_count_b(text) == 8.0
    assert parameter_count_b(ExpertDescriptor("mystery", 0, 0)) is None
