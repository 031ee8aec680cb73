"""Leave-one-model-out onboarding (`training.onboarding`) on the synthetic pool."""

from __future__ import annotations

import numpy as np
import pytest

from router.cluster import ClusterRouter
from router.policy import choose
from tests.router.pools import OLD, pool
from training.onboarding import _draws, columns, lomo, lomo_cv

SMALL = {"n_clusters": 6, "top": 1}


def test_lomo_compares_added_with_full_and_left_out() -> None:
    train, x = pool(600, seed=0)
    test, xt = pool(300, seed=1)
    configs = [{}, {"onboard": "irt", "onboard_rank": 0}]
    (row,) = lomo(train, x, test, xt, ["newbie"], configs, SMALL, n_profile=100, draws=2)
    assert row.model == "newbie" and len(row.added) == 2 and len(row.added[0]) == 2
    assert row.left_out < row.full  # newbie is the only one right on topic 2
    assert all(abs(a - row.full) < 0.02 for a in row.added[0])
    assert row.share_full > 0.2 and row.share_added[0] > 0.2


def test_lomo_cv_reads_only_the_training_file() -> None:
    train, x = pool(600, seed=0)
    (row,) = lomo_cv(train, x, ["cheap"], [{}], router_params=SMALL, draws=1)
    assert 0.0 <= row.full <= 1.0 and row.added[0][0] <= 1.0


def test_lomo_draws_the_profile_as_the_config_selects() -> None:
    train, x = pool(600, seed=0)
    test, xt = pool(300, seed=1)
    configs = [{"select": "stratified"}, {"select": "stratified", "onboard_costs": "own"}]
    (row,) = lomo(train, x, test, xt, ["newbie"], configs, SMALL, n_profile=60, draws=2)
    assert all(abs(a - row.full) < 0.02 for added in row.added for a in added)


def test_answered_draws_only_queries_some_other_model_got_right() -> None:
    # what `coe profile --from-training` can grade without a gold column; on topic 2 the old
    # experts are each right 30% of the time, so some of its queries are not drawn
    train, x = pool(600, seed=0)
    test, xt = pool(300, seed=1)
    gradable = np.delete(train.scores, train.models.index("newbie"), axis=1).max(axis=1) >= 1
    assert 0 < (~gradable).sum() < 300
    router = ClusterRouter(**SMALL).fit(train, x)
    for p in _draws(router, x, "answered", 100, 3, [0, 3], gradable):
        assert gradable[p].all() and len(set(p)) == 100
    random = _draws(router, x, "random", 100, 3, [0, 3], gradable)
    assert any((~gradable[p]).any() for p in random)
    (row,) = lomo(train, x, test, xt, ["newbie"], [{"select": "answered"}], SMALL, draws=2)
    assert min(row.added[0]) > row.left_out + 0.1  # it still gets its topic


@pytest.mark.parametrize("select", ["doptimal-cf", "half-doptimal"])
def test_the_designs_that_profile_the_topic_the_newcomer_is_best_on(select: str) -> None:
    # D-optimal for the IRT fit alone skips topic 2 (the old experts do not differ there);
    # the cf design adds what the regions do not explain of their outcomes, and half-doptimal
    # draws half the profile at random: both see it
    train, x = pool(600, seed=0)
    test, xt = pool(300, seed=1)
    (row,) = lomo(train, x, test, xt, ["newbie"], [{"select": select}], SMALL, draws=2)
    assert all(abs(a - row.full) < 0.05 for a in row.added[0]) and row.share_added[0] > 0.15
    (plain,) = lomo(train, x, test, xt, ["newbie"], [{"select": "doptimal"}], SMALL, draws=1)
    assert plain.added[0][0] == pytest.approx(plain.left_out)  # the blind spot


def test_the_coupled_prior_places_the_topic_expert_and_not_an_idle_one() -> None:
    # `meh` is right on a random 30% everywhere at newbie's price (no better than `cheap`):
    # what it gets (ties on topic 2, where everyone is right 30% of the time) must cost
    # nothing, while newbie still gets its topic
    configs = [{"select": "half-doptimal", "onboard_coupled": True}]
    train, x = pool(600, seed=0)
    test, xt = pool(300, seed=1)
    (row,) = lomo(train, x, test, xt, ["newbie"], configs, SMALL, draws=3)
    assert all(abs(a - row.full) < 0.05 for a in row.added[0]) and row.share_added[0] > 0.15
    models = (*OLD, "meh")
    train, x = pool(600, seed=0, models=models)
    test, xt = pool(300, seed=1, models=models)
    (idle,) = lomo(train, x, test, xt, ["meh"], configs, SMALL, draws=3)
    assert idle.share_full < 0.05 and min(idle.added[0]) >= idle.left_out - 0.002
    # from the router's own design (what `coe profile --from-training --base` asks): never
    # on the topics an incumbent is always right on, and little at a moderate price weight
    router = ClusterRouter(**SMALL).fit(columns(train, OLD), x)
    for seed in range(3):
        p = router.select_profile(x, 100, "half-doptimal", seed=seed)
        grown = router.add_experts(columns(train.take(p), ["meh"]), x[p])
        quality = grown.score(xt, test.prompts)
        predicted = grown.predicted_costs(xt, test.prompt_tokens)
        topic = np.arange(len(test)) % 3
        assert (choose(quality, predicted, 0.0, grown.cost_scale_)[topic != 2] == 3).mean() == 0
        assert (choose(quality, predicted, 0.1, grown.cost_scale_) == 3).mean() <= 0.05
