"""Neighbour routers over projected training vectors (`router.neighbours`, `dims`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from router.base import Router
from router.ensemble import EnsembleRouter
from router.irt import IRTRouter
from router.knn import KNNRouter
from router.neighbours import Projection
from tests.router.pools import pool


def _unit(n: int, width: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, width))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_full_width_projection_is_a_rotation_and_round_trips() -> None:
    x = _unit(200, 24, seed=0)
    projection = Projection.fit(x, 24)
    y = projection.apply(x)
    np.testing.assert_allclose(y @ projection.components.T, x, atol=1e-5)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-5)  # inner products kept
    again = pickle.loads(pickle.dumps(projection))
    np.testing.assert_array_equal(again.components, projection.components)
    np.testing.assert_array_equal(again.apply(x), y)


def test_fewer_dims_keep_the_leading_directions() -> None:
    # rank-3 data in 24 dims plus noise: 3 dims keep nearly all of every inner product
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 24)) + rng.normal(0, 0.01, (300, 24))
    x = x.astype(np.float32)
    projection = Projection.fit(x, 3)
    assert projection.dims == 3 and projection.apply(x).shape == (300, 3)
    exact = x @ x.T
    got = projection.apply(x) @ projection.apply(x).T
    assert np.abs(got - exact).max() < 0.01 * np.abs(exact).max()
    with pytest.raises(ValueError, match="dims"):
        Projection.fit(x, 25)


def test_apply_remembers_the_last_rows_by_value() -> None:
    x = _unit(50, 8, seed=2)
    projection = Projection.fit(x, 4)
    q = x[:3].copy()
    first = projection.apply(q)
    assert projection.apply(q.copy()) is first  # equal values: not projected again
    q[0, 0] += 0.5  # changed in place: projected again
    np.testing.assert_allclose(projection.apply(q), q @ projection.components, rtol=1e-6)
    assert not first.flags.writeable


@pytest.mark.parametrize("family", [KNNRouter, IRTRouter])
def test_full_width_dims_decide_as_the_float32_product(family: type[Router]) -> None:
    data, x = pool(300, seed=0)
    test, xt = pool(90, seed=1)
    plain = family(k=20).fit(data, x)  # type: ignore[call-arg]
    rotated = family(k=20, dims=x.shape[1]).fit(data, x)  # type: ignore[call-arg]
    assert rotated.reduced_ is not None and plain.reduced_ is None  # type: ignore[attr-defined]
    a, b = plain.score(xt, test.prompts), rotated.score(xt, test.prompts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(a.argmax(axis=1), b.argmax(axis=1))


def test_few_dims_still_route_each_topic() -> None:
    data, x = pool(300, seed=0)
    test, xt = pool(60, seed=1)
    router = KNNRouter(k=20, dims=4).fit(data, x)
    assert router.reduced_ is not None and router.reduced_.shape == (300, 4)
    picks = router.score(xt, test.prompts).argmax(axis=1)
    topic = np.arange(len(test)) % 3
    assert (picks[topic == 0] == 0).all() and (picks[topic == 1] == 1).all()
    assert (picks[topic == 2] == 3).all()


def test_an_artifact_saved_before_dims_existed_loads_and_scores(tmp_path: Path) -> None:
    data, x = pool(120, seed=0)
    router = KNNRouter(k=10).fit(data, x)
    expected = router.score(x[:7], data.prompts[:7])
    for name in ("dims", "projection_", "reduced_"):  # what the older class never set
        del router.__dict__[name]
    path = tmp_path / "old.pkl"
    router.save(path)
    loaded = Router.load(path)
    assert isinstance(loaded, KNNRouter) and "reduced_" not in loaded.__dict__
    np.testing.assert_array_equal(loaded.score(x[:7], data.prompts[:7]), expected)


def test_ensemble_members_share_one_projection_through_save(tmp_path: Path) -> None:
    data, x = pool(200, seed=0)
    members = (("knn", 1.0, {"k": 10, "dims": 6}), ("irt", 1.0, {"k": 10, "dims": 6}),
               ("knn", 1.0, {"k": 30}))  # fmt: skip
    router = EnsembleRouter(members).fit(data, x)
    a, b, c = router.routers_
    assert a.projection_ is b.projection_ and a.reduced_ is b.reduced_  # type: ignore[attr-defined]
    assert c.projection_ is None  # type: ignore[attr-defined]
    path = tmp_path / "ensemble.pkl"
    router.save(path)
    loaded = Router.load(path)
    assert isinstance(loaded, EnsembleRouter)
    la, lb, _ = loaded.routers_
    assert la.projection_ is lb.projection_  # type: ignore[attr-defined]
    np.testing.assert_array_equal(loaded.score(x[:9], data.prompts[:9]),
                                  router.score(x[:9], data.prompts[:9]))  # fmt: skip
