"""`--router auto`: the family is chosen by cross-validation on the training file alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router import Router
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from tests.router.conftest import make_topics
from training.auto import check_auto_params, fit_auto, pick, selection_table
from training.errors import CoeTrainingError
from training.fitting import family_params, fit_router

CANDIDATES = [["best_single", {}], ["category", {}], ["random", {}]]


def _flat(n: int = 120) -> tuple[RoutingData, np.ndarray]:
    """Nothing to route on: the embedding is noise, `strong` is right 90% everywhere, `weak` 30%
    at the same price. Any learner only adds noise to the best single model's answer."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = np.column_stack([rng.random(n) < 0.9, rng.random(n) < 0.3]).astype(float)
    return (
        RoutingData(
            [f"q{i}" for i in range(n)],
            [f"p{i}" for i in range(n)],
            [None] * n,
            ("strong", "weak"),
            scores,
            np.full((n, 2), 1e-4),
            (ExpertDescriptor("strong", 1, 1), ExpertDescriptor("weak", 1, 1)),
        ),
        x,
    )


def test_auto_picks_the_learner_where_there_is_something_to_learn() -> None:
    data, x = make_topics(120, seed=0)
    router = fit_auto(data, x, {"candidates": CANDIDATES, "folds": 3}, seed=0)
    assert router.name == "category"
    selection = router.selection_
    assert selection is not None and selection["router"] == "category"
    rows = {r["router"]: r for r in selection["table"]}
    assert rows["category"]["aiq"] > rows["best_single"]["aiq"] > rows["random"]["aiq"] - 0.5
    assert "← chosen" in selection_table(selection)


def test_auto_keeps_the_best_single_model_where_routing_cannot_help() -> None:
    data, x = _flat()
    router = fit_auto(data, x, {"candidates": CANDIDATES[:1] + CANDIDATES[2:], "folds": 3}, 0)
    assert router.name == "best_single"


def test_auto_through_fit_router_and_a_round_trip(tmp_path: Path) -> None:
    data, x = make_topics(90, seed=0)
    router = fit_router("auto", data, x, {"candidates": CANDIDATES, "folds": 3}, seed=0)
    path = tmp_path / "auto.pkl"
    router.save(path)
    loaded = Router.load(path)
    assert loaded.name == router.name and loaded.selection_ == router.selection_


def test_pick_honours_the_metric_direction_and_prefers_the_earlier_on_ties() -> None:
    table = [
        {"router": "a", "params": {}, "aiq": 0.5, "cost_share_to_match_best_single": 0.9},
        {"router": "b", "params": {}, "aiq": 0.5, "cost_share_to_match_best_single": 0.7},
    ]
    assert pick(table, "aiq")["router"] == "a"
    assert pick(table, "cost_share_to_match_best_single")["router"] == "b"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"candidate": []}, "auto takes"),
        ({"metric": "speed"}, "metric"),
        ({"folds": 1}, "folds"),
        ({"candidates": [["nope", {}]]}, "not a router family"),
        ({"candidates": [["auto", {}]]}, "not a router family"),
        ({"candidates": [3]}, "pairs"),
    ],
)
def test_bad_auto_settings_fail_before_fitting(params: dict[str, object], message: str) -> None:
    with pytest.raises(CoeTrainingError, match=message):
        check_auto_params(params)


def test_auto_takes_no_cost_weight(tmp_path: Path) -> None:
    with pytest.raises(CoeTrainingError, match="cost-weight"):
        family_params("auto", {}, 0.5, tmp_path / "r.pkl")
    assert family_params("auto", {"folds": 3}, None, tmp_path / "r.pkl") == {"folds": 3}
