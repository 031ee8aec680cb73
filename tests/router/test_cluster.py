"""The cluster router (per-region profiles), its reply-cost model, and onboarding a new expert."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from router.cluster import ClusterRouter, OnboardingError
from router.costs import ReplyCostModel
from router.data import RoutingData
from router.policy import choose
from tests.router.pools import OLD, only, pool


def test_regions_learn_who_is_right_where() -> None:
    data, x = pool(600, seed=0)
    test, xt = pool(90, seed=1)
    router = ClusterRouter(n_clusters=6, top=1).fit(data, x)
    picks = router.score(xt, test.prompts).argmax(axis=1)
    topic = np.arange(len(test)) % 3
    assert (picks[topic == 0] == 0).all() and (picks[topic == 1] == 1).all()
    assert (picks[topic == 2] == 3).all()


def test_cost_model_predicts_each_experts_reply_from_training_only() -> None:
    data, x = pool(300, seed=0)
    model = ReplyCostModel(n_clusters=3).fit(data, x)
    test, xt = pool(30, seed=1)
    tokens = model.reply_tokens(xt, len(test))
    assert tokens[:, 0] == pytest.approx(np.full(30, 800.0))
    assert tokens[:, 1] == pytest.approx(np.full(30, 200.0))
    scrambled = RoutingData(**{**test.__dict__, "costs": test.costs[::-1] * 7.0})
    assert np.array_equal(
        model.predict(xt, scrambled.prompt_tokens), model.predict(xt, test.prompt_tokens)
    )


def test_a_new_expert_best_on_one_topic_gets_it_after_100_profiled_queries() -> None:
    full, x = pool(600, seed=0)
    router = ClusterRouter(n_clusters=6, top=1).fit(only(full, OLD), x)
    profile, xp = pool(100, seed=2)
    grown = router.add_experts(only(profile, ("newbie",)), xp)
    assert grown.models_ == [*OLD, "newbie"] and router.models_ == list(OLD)
    test, xt = pool(300, seed=3)
    predicted = grown.predicted_costs(xt, test.prompt_tokens)
    picks = choose(grown.score(xt, test.prompts), predicted, 0.1, grown.cost_scale_)
    topic = np.arange(len(test)) % 3
    assert (picks[topic == 2] == 3).mean() >= 0.95
    assert (picks[topic != 2] == 3).mean() <= 0.05
    # its reply cost is learned from the profile too: 300 tokens at 0.5 USD / 1M
    assert grown.cost_model_ is not None
    assert grown.cost_model_.reply_tokens(xt, len(test))[:, 3] == pytest.approx(np.full(300, 300.0))


def test_onboarding_refuses_a_profile_without_a_new_expert() -> None:
    data, x = pool(300, seed=0)
    router = ClusterRouter(n_clusters=3).fit(only(data, OLD), x)
    with pytest.raises(OnboardingError, match="coe profile"):
        router.add_experts(only(data, OLD), x)


@pytest.mark.parametrize("draw", range(2, 8))
def test_a_mediocre_new_expert_does_not_take_over_from_100_noisy_outcomes(draw: int) -> None:
    # meh is right on a random 30% everywhere: a region where its few profiled outcomes happen
    # to be good must not hand it that region's queries.
    models = (*OLD, "meh")
    full, x = pool(600, seed=0, models=models)
    router = ClusterRouter(n_clusters=6, top=1).fit(only(full, OLD), x)
    profile, xp = pool(100, seed=draw, models=models)
    grown = router.add_experts(only(profile, ("meh",)), xp)
    test, xt = pool(300, seed=1, models=models)
    quality = grown.score(xt, test.prompts)
    predicted = grown.predicted_costs(xt, test.prompt_tokens)
    assert (choose(quality, predicted, 0.1, grown.cost_scale_) == 3).mean() <= 0.05
    topic = np.arange(len(test)) % 3
    assert (choose(quality, predicted, 0.0, grown.cost_scale_)[topic != 2] == 3).mean() == 0.0


def test_stratified_profile_selection_covers_every_topic_and_pool_costs_onboard() -> None:
    full, x = pool(600, seed=0)
    router = ClusterRouter(n_clusters=6, top=1, onboard_costs="pool").fit(only(full, OLD), x)
    picked = router.select_profile(x, 60, "stratified", seed=1)
    topic = np.arange(len(full)) % 3
    assert len(np.unique(picked)) == 60
    assert np.bincount(topic[picked], minlength=3).tolist() == [20, 20, 20]
    grown = router.add_experts(only(full.take(picked), ("newbie",)), x[picked])
    test, xt = pool(300, seed=3)
    assert grown.cost_model_ is not None
    assert grown.cost_model_.reply_tokens(xt, len(test))[:, 3] == pytest.approx(np.full(300, 300.0))
    picks = choose(
        grown.score(xt, test.prompts),
        grown.predicted_costs(xt, test.prompt_tokens),
        0.1,
        grown.cost_scale_,
    )
    assert (picks[np.arange(len(test)) % 3 == 2] == 3).mean() >= 0.95


def _noisy_copy(data: RoutingData, of: str, flip: float, seed: int) -> RoutingData:
    """`data` with one more expert, "copy": `of`'s outcomes with a share `flip` flipped."""
    rng = np.random.default_rng(seed)
    j = list(data.models).index(of)
    copied = np.where(rng.random(len(data)) < flip, 1 - data.scores[:, j], data.scores[:, j])
    return RoutingData(
        **{
            **data.__dict__,
            "models": [*data.models, "copy"],
            "scores": np.column_stack([data.scores, copied]),
            "costs": np.column_stack([data.costs, data.costs[:, j]]),
            "experts": [*data.experts, dataclasses.replace(data.experts[j], name="copy")],
        }
    )


@pytest.mark.parametrize("of", OLD)
def test_cf_onboarding_gives_a_noisy_copy_of_an_expert_that_experts_profile(of: str) -> None:
    full, x = pool(600, seed=0)
    data = _noisy_copy(only(full, OLD), of, flip=0.1, seed=1)
    router = ClusterRouter(n_clusters=6, top=1, onboard="cf").fit(only(data, OLD), x)
    picked = np.sort(np.random.default_rng(2).choice(len(data), 100, replace=False))
    grown = router.add_experts(only(data.take(picked), ("copy",)), x[picked])
    # close to what fitting with all its outcomes gives it, and nearest its twin's profile
    full_column = ClusterRouter(n_clusters=6, top=1).fit(data, x).table_[:, -1]
    column = grown.table_[:, -1]
    assert np.abs(column - full_column).max() < 0.08
    others = [np.abs(column - router.table_[:, j]).mean() for j in range(len(OLD))]
    assert int(np.argmin(others)) == OLD.index(of)


def test_cf_onboarding_from_training_queries_gives_the_topic_expert_its_topic() -> None:
    full, x = pool(600, seed=0)
    router = ClusterRouter(n_clusters=6, top=1, onboard="cf", onboard_costs="cf")
    router.fit(only(full, OLD), x)
    picked = np.sort(np.random.default_rng(4).choice(len(full), 100, replace=False))
    grown = router.add_experts(only(full.take(picked), ("newbie",)), x[picked])
    assert grown.train_scores_ is not None and grown.train_scores_.shape == (600, 4)
    assert grown.train_log_reply_ is not None and grown.train_log_reply_.shape == (600, 4)
    test, xt = pool(300, seed=3)
    assert grown.cost_model_ is not None
    assert grown.cost_model_.reply_tokens(xt, len(test))[:, 3] == pytest.approx(np.full(300, 300.0))
    picks = choose(
        grown.score(xt, test.prompts), grown.predicted_costs(xt, test.prompt_tokens), 0.1,
        grown.cost_scale_,
    )  # fmt: skip
    topic = np.arange(len(test)) % 3
    assert (picks[topic == 2] == 3).mean() >= 0.95 and (picks[topic != 2] == 3).mean() <= 0.05


def test_cf_onboarding_of_other_questions_and_of_old_artifacts_still_places_the_expert() -> None:
    # a profile of questions the training file lacks regresses on predicted outcomes; an
    # artifact pickled before the router remembered its training file onboards as `irt`
    full, x = pool(600, seed=0)
    profile, xp = pool(100, seed=2)
    test, xt = pool(300, seed=3)
    topic = np.arange(len(test)) % 3
    for forget in (False, True):
        router = ClusterRouter(n_clusters=6, top=1, onboard="cf", onboard_costs="cf")
        router.fit(only(full, OLD), x)
        if forget:
            del router.train_keys_, router.train_scores_, router.train_regions_, router.train_mix_
            del router.train_log_reply_
        grown = router.add_experts(only(profile, ("newbie",)), xp)
        assert (grown.train_scores_ is None) == forget
        picks = grown.score(xt, test.prompts).argmax(axis=1)
        assert (picks[topic == 2] == 3).mean() >= 0.95


def test_the_remembered_training_file_is_small() -> None:
    full, x = pool(600, seed=0)
    router = ClusterRouter(n_clusters=6, top=1).fit(full, x)
    assert router.train_scores_ is not None and router.train_scores_.dtype == np.float16
    kept = sum(
        a.nbytes
        for a in (
            router.train_keys_,
            router.train_scores_,
            router.train_regions_,
            router.train_mix_,
        )
        if a is not None
    )
    assert kept + router.train_log_reply_.nbytes == 600 * (8 + 4 * 4 + 2 + 2)
    assert router._training_weights() == pytest.approx(router._weights(x), abs=1e-3)


def test_the_lower_bound_lowers_the_newcomer_by_its_uncertainty_and_keeps_its_topic() -> None:
    full, x = pool(600, seed=0)
    picked = np.sort(np.random.default_rng(4).choice(len(full), 100, replace=False))
    profile = only(full.take(picked), ("newbie",))
    columns = {}
    for lcb in (0.0, 1.0):
        router = ClusterRouter(n_clusters=6, top=1, onboard_lcb=lcb).fit(only(full, OLD), x)
        columns[lcb] = router.add_experts(profile, x[picked]).table_[:, -1]
    lowered = columns[0.0] - columns[1.0]
    assert (lowered >= 0).all() and lowered.max() > 0.005
    # deterministic: the same profile, the same bound
    again = ClusterRouter(n_clusters=6, top=1, onboard_lcb=1.0).fit(only(full, OLD), x)
    assert again.add_experts(profile, x[picked]).table_[:, -1] == pytest.approx(columns[1.0])
    centroid_topic = np.argmax(router.centroids_[:, :3], axis=1)
    assert columns[1.0][centroid_topic == 2].min() > router.table_[centroid_topic == 2].max() + 0.3
