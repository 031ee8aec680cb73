"""The stacked router: per-expert logistic weights over out-of-fold member scores."""

from __future__ import annotations

import numpy as np
import pytest

from router.stack import StackRouter
from tests.router.pools import pool

MEMBERS = (("cluster", {"n_clusters": 6, "top": 1}), ("knn", {"k": 20}))


def test_stack_learns_who_is_right_where() -> None:
    data, x = pool(600, seed=0)
    test, xt = pool(90, seed=1)
    router = StackRouter(MEMBERS, folds=3).fit(data, x)
    quality = router.score(xt, test.prompts)
    assert quality.shape == (90, 4) and ((quality > 0) & (quality < 1)).all()
    picks = quality.argmax(axis=1)
    topic = np.arange(len(test)) % 3
    assert (picks[topic == 0] == 0).all() and (picks[topic == 1] == 1).all()
    assert (picks[topic == 2] == 3).all()


def test_stack_refuses_an_unknown_member() -> None:
    data, x = pool(60, seed=0)
    with pytest.raises(ValueError, match="unknown stack members"):
        StackRouter((("nope", {}),)).fit(data, x)
