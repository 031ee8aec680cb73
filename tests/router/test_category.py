"""`CategoryRouter.category_proba` computes sklearn's probabilities itself, to the last bit."""

from __future__ import annotations

import numpy as np
import pytest

from router.category import CategoryRouter
from router.data import RoutingData

Pair = tuple[RoutingData, np.ndarray]


@pytest.mark.parametrize("clusters", [2, 5])
def test_category_proba_is_sklearns_to_the_bit(topics: Pair, held_out: Pair, clusters: int) -> None:
    data, x = topics
    unlabelled = RoutingData(
        data.query_ids, data.prompts, [None] * len(data), data.models, data.scores, data.costs
    )
    router = CategoryRouter(n_clusters=clusters).fit(unlabelled, x)
    assert len(router.categories_) == clusters
    _, queries = held_out
    for rows in (queries[:1], queries):  # one request's row and a batch
        expected = router.classifier_.predict_proba(rows.astype(np.float64))  # type: ignore[attr-defined]
        assert np.array_equal(router.category_proba(rows), expected)
        assert np.array_equal(router.score(rows, []), expected @ router.table_)
