"""Per-region agreement chains (`router.chain_regions`, `RegionalChainRouter`).

On a pool of two topics, where the cheap pair's agreement is reliable on one and worthless on
the other (`tests.router.chain_pools.topic_pool`), one chain for all must either pay the strong
expert everywhere or trust a worthless agreement half the time; a chain per region asks the pair
on the easy topic and goes straight to the strong expert on the hard one. On a pool where
regions do not matter the one-SE rule keeps the global chain. Served, the episode of a query's
embedding runs its region's chain, call for call as the offline run does.
"""

from __future__ import annotations

import numpy as np

from router.chain_regions import Centroids, Gate, Neighbours, assign, partitions
from router.chains import Chain, ChainRouter, RegionalChainRouter
from router.data import RoutingData
from router.knn import KNNRouter
from tests.router.chain_pools import pair_pool, topic_pool
from training.chains import ChainStrategy
from training.recorded import ReplyTable, reply_table
from training.strategy_eval import reply_key


def test_a_region_whose_agreement_is_worthless_goes_to_the_strong_expert() -> None:
    data, x = topic_pool(600, 0)
    router = RegionalChainRouter(share=0.75).fit(data, x)
    row = {r["share"]: r for r in router.cv_}[0.75]
    assert row["regions"] in router.partitions_
    assert row["cv_accuracy"] > row["cv_global_accuracy"] + 0.05
    assert router.chain_for(0.75, x[0]).experts[:2] in {
        ("cheap-a", "cheap-b"),
        ("cheap-b", "cheap-a"),
    }
    assert router.chain_for(0.75, x[1]) == Chain(("strong",), 1)
    assert router.max_calls == 3
    # without an embedding (or below every won budget) the global chain serves
    assert router.chain_for(0.75) == Chain.of(
        tuple(router.models_[j] for j in router.chains_[0.75][0]), router.chains_[0.75][1]
    )


def test_regions_beat_one_chain_on_new_queries() -> None:
    (train, x), (test, x_test) = topic_pool(600, 1), topic_pool(400, 2)
    runs = {}
    for regions in (False, True):
        strategy = ChainStrategy(regions=regions).fit(train, x, _table(train))
        quality = strategy.quality(x_test, test.prompts)
        runs[regions] = strategy.run(test, _table(test), quality, {"share": 0.75})
    assert runs[True].score.mean() > runs[False].score.mean() + 0.05
    share = runs[True].cost.mean() / test.costs[:, 2].mean()
    assert share <= 0.8


def test_the_served_episode_runs_the_offline_chain() -> None:
    (train, x), (test, x_test) = topic_pool(600, 3), topic_pool(120, 4)
    strategy = ChainStrategy(regions=True, shares=(0.75,)).fit(train, x, _table(train))
    offline = strategy.run(
        test, _table(test), strategy.quality(x_test, test.prompts), {"share": 0.75}
    )
    router = strategy.router_
    router.share = 0.75
    assert test.responses is not None
    for i in range(len(test)):
        episode = router.episode(x_test[i], test.costs[i], question=test.prompts[i])
        while (expert := episode.next_expert()) is not None:
            j = router.models_.index(expert)
            episode.record(expert, float(test.costs[i, j]), str(test.responses[i, j]))
        answer = router.models_.index(episode.answer_expert() or "")
        assert test.scores[i, answer] == offline.score[i], i
        assert episode.spent == offline.cost[i]


def test_without_regional_structure_the_global_chain_is_kept() -> None:
    data = pair_pool(600, 5)
    x = np.random.default_rng(5).normal(size=(600, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    router = RegionalChainRouter(share=0.5).fit(data, x)
    plain = ChainRouter(share=0.5).fit(data, x)
    assert router.chain_for(0.5, x[0]) == plain.chain_
    assert "regions" not in {r["share"]: r for r in router.cv_}[0.5]


def test_partitions_need_enough_queries_per_region() -> None:
    data, x = topic_pool(240, 6)
    found, labels = partitions(data, x, seed=0, folds=5)
    assert "kmeans-4" in found and "kmeans-8" not in found  # 240 < 8 × 50
    assert isinstance(found["task"], Centroids) and found["task"].n_regions == 2
    assert (labels["task"] == np.arange(240) % 2).mean() > 0.95  # the topic, from the embedding
    assert isinstance(found["task-knn"], Neighbours) and found["task-knn"].n_regions == 2
    assert (labels["task-knn"] == np.arange(240) % 2).mean() > 0.95  # out of fold, as served
    assert (found["task-knn"].labels(x[:40]) == np.arange(40) % 2).all()
    gate = found["gate-50"]
    assert isinstance(gate, Gate) and gate.n_regions == 2
    assert set(np.unique(labels["gate-50"])) == {0, 1}


def test_gate_cuts_the_predicted_quality() -> None:
    gate = Gate(KNNRouter(), np.array([0.3, 0.6]))
    assert gate.cut(np.array([0.1, 0.3, 0.5, 0.9])).tolist() == [0, 1, 1, 2]


def test_assign_shares_one_budget_across_regions() -> None:
    # column 0: cheap, right on region 0 only; column 1: dear, always right
    labels = np.array([0] * 50 + [1] * 50)
    score = np.stack([labels == 0, np.ones(100, dtype=bool)], axis=1).astype(float)
    cost = np.tile([0.0, 1.0], (100, 1))
    assert assign(score, cost, labels, 2, [0, 1], budget=0.5, kappa=0.0).tolist() == [0, 1]
    assert assign(score, cost, labels, 2, [0, 1], budget=0.1, kappa=0.0).tolist() == [0, 0]
    # an empty region takes the chain that is best over all regions at the chosen λ
    assert assign(score, cost, labels, 3, [0, 1], budget=2.0, kappa=10.0).tolist()[2] == 1


def _table(data: RoutingData) -> ReplyTable:
    assert data.responses is not None
    return reply_table(data.responses, data.prompts, reply_key, data.tasks)
