"""Every learned router family recovers the synthetic answer and round-trips through a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router import ROUTERS, PoolMismatchError, Router
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.skills import SkillsRouter, rank_aggregators

LEARNED = ["knn", "classifier", "category", "mf", "skills", "ensemble", "stack", "irt"]
Pair = tuple[RoutingData, np.ndarray]


def _fit(name: str, topics: Pair) -> Router:
    params = {"n_skills": 4} if name == "skills" else {}
    return ROUTERS[name](**params).fit(*topics)


@pytest.mark.parametrize("name", LEARNED)
def test_router_sends_each_topic_to_its_expert(name: str, topics: Pair, held_out: Pair) -> None:
    router = _fit(name, topics)
    data, x = held_out
    quality = router.score(x, data.prompts)
    assert quality.shape == (len(data), 3)
    assert np.all((quality >= 0) & (quality <= 1))
    right = np.where(np.asarray([t == "topic0" for t in data.tasks]), 0, 1)
    assert (quality.argmax(axis=1) == right).mean() >= 0.95


@pytest.mark.parametrize("name", LEARNED)
def test_router_round_trips_and_keeps_its_pool(name: str, topics: Pair, tmp_path: Path) -> None:
    router = _fit(name, topics)
    path = tmp_path / "router.pkl"
    router.save(path)
    loaded = Router.load(path)
    x = topics[1][:5]
    np.testing.assert_allclose(loaded.score(x, ["q"] * 5), router.score(x, ["q"] * 5))
    assert loaded.models_ == ["alpha", "beta", "cheap"]
    assert loaded.cost_scale_ == pytest.approx(1e-3)


def test_loading_against_another_pool_is_refused(topics: Pair) -> None:
    router = _fit("knn", topics)
    with pytest.raises(PoolMismatchError, match="retrain"):
        router.check_pool([ExpertDescriptor("alpha", 1, 1), ExpertDescriptor("gamma", 1, 1)])


def test_load_refuses_a_file_that_is_not_a_router(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"router": 3}))
    with pytest.raises(ValueError, match="not a coe router"):
        Router.load(path)


def test_fit_rejects_misaligned_embeddings(topics: Pair) -> None:
    data, x = topics
    with pytest.raises(ValueError, match="embeddings for"):
        ROUTERS["knn"]().fit(data, x[:-1])


def test_category_uses_task_labels_and_clusters_without_them(topics: Pair) -> None:
    data, x = topics
    router = ROUTERS["category"]().fit(data, x)
    assert router.categories_ == ["topic0", "topic1"]  # type: ignore[attr-defined]
    unlabelled = RoutingData(
        data.query_ids, data.prompts, [None] * len(data), data.models, data.scores, data.costs
    )
    clustered = ROUTERS["category"](n_clusters=2).fit(unlabelled, x)
    assert clustered.categories_ == ["cluster-0", "cluster-1"]  # type: ignore[attr-defined]
    held = clustered.score(x, data.prompts).argmax(axis=1)
    assert (held == np.where(np.asarray(data.tasks) == "topic0", 0, 1)).mean() > 0.95


def test_skills_recruits_and_ranks_aggregators(topics: Pair) -> None:
    data, x = topics
    router = SkillsRouter(n_skills=4).fit(data, x)
    topic0 = x[0]
    assert router.recruit(topic0, k=1) == ["alpha"]
    assert router.query_skills(topic0)[0][0].startswith("topic0")
    assert rank_aggregators(router, topic0)[0] == "alpha"
    # A declared aggregation skill lifts an otherwise close expert.
    experts = [ExpertDescriptor("cheap", 0.1, 0.1, skills=("aggregation",))]
    assert rank_aggregators(router, topic0, experts, bonus=1.0)[0] == "cheap"


def test_mf_is_deterministic_for_a_seed(topics: Pair) -> None:
    a = ROUTERS["mf"](seed=3, epochs=50).fit(*topics).score(topics[1][:4], ["q"] * 4)
    b = ROUTERS["mf"](seed=3, epochs=50).fit(*topics).score(topics[1][:4], ["q"] * 4)
    np.testing.assert_array_equal(a, b)


def test_classifier_mlp_kind_learns(topics: Pair, held_out: Pair) -> None:
    router = ROUTERS["classifier"](kind="mlp", hidden=16).fit(*topics)
    data, x = held_out
    right = np.where(np.asarray([t == "topic0" for t in data.tasks]), 0, 1)
    assert (router.score(x, data.prompts).argmax(axis=1) == right).mean() >= 0.9


def test_baselines(topics: Pair) -> None:
    data, x = topics
    best = ROUTERS["best_single"]().fit(data, x).score(x[:2], ["a", "b"])
    assert best.shape == (2, 3)
    oracle = ROUTERS["oracle"]().fit(data, x)
    np.testing.assert_array_equal(oracle.score(x[:1], [data.prompts[0]])[0], data.scores[0])
    cheapest = ROUTERS["cheapest"]().fit_pool(data.experts)
    assert cheapest.uses_embeddings is False
    assert cheapest.score(np.zeros((1, 0)), ["q"]).shape == (1, 3)
