"""The routing step: micro-batched embedding, a query-aware router, and pool checks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from api.embedding import BatchingEmbedder
from api.routing import RoutingService, build_routers
from router.base import PoolMismatchError, Router
from router.descriptor import ExpertDescriptor
from router.policy import Policy

pytestmark = pytest.mark.asyncio

EXPERTS = [ExpertDescriptor("mathy", 1.0, 1.0), ExpertDescriptor("chatty", 1.0, 1.0)]


class KeywordEmbedder:
    """[1, 0] for texts about math, [0, 1] otherwise; records each batch it is given."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(texts))
        return np.array([[1.0, 0.0] if "math" in t else [0.0, 1.0] for t in texts], np.float32)


class DotRouter(Router):
    """Quality = the embedding itself: dimension 0 is mathy's skill, 1 is chatty's."""

    name = "dot"

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        return 0.1 + 0.8 * embeddings


async def test_concurrent_queries_are_embedded_in_one_batch_and_cached() -> None:
    gate = threading.Event()
    embedder = KeywordEmbedder(gate)
    batching = BatchingEmbedder(embedder)
    first = asyncio.create_task(batching.embed_one("q0"))
    await asyncio.sleep(0.05)  # q0's batch is running (blocked on the gate)
    rest = [asyncio.create_task(batching.embed_one(f"q{i}")) for i in range(1, 9)]
    rest.append(asyncio.create_task(batching.embed_one("q1")))  # a duplicate in the same batch
    await asyncio.sleep(0.05)
    gate.set()
    vectors = await asyncio.gather(first, *rest)
    assert len(vectors) == 10
    assert embedder.batches == [["q0"], [f"q{i}" for i in range(1, 9)]]
    await batching.embed_one("q3")  # cached: no new batch
    assert len(embedder.batches) == 2
    await batching.aclose()


async def test_embedder_failure_reaches_the_caller_and_serving_goes_on() -> None:
    class Flaky(KeywordEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            if "boom" in texts:
                raise RuntimeError("model crashed")
            return super().embed(texts)

    batching = BatchingEmbedder(Flaky())
    with pytest.raises(RuntimeError, match="model crashed"):
        await batching.embed_one("boom")
    assert (await batching.embed_one("fine")).shape == (2,)
    await batching.aclose()


async def test_a_query_aware_router_sends_each_query_to_its_expert() -> None:
    routers = build_routers(EXPERTS, DotRouter().fit_pool(EXPERTS))
    embedder = BatchingEmbedder(KeywordEmbedder())
    service = RoutingService(EXPERTS, routers, "dot", Policy(), embedder, 256)
    math = await service.decide([{"role": "user", "content": "a math question"}])
    chat = await service.decide([{"role": "user", "content": "tell me a story"}])
    assert math.ranked == ["mathy", "chatty"] and chat.ranked == ["chatty", "mathy"]
    assert math.scores == pytest.approx({"mathy": 0.9, "chatty": 0.1})
    # routed on the last user turn, not on the system prompt
    steered = await service.decide(
        [{"role": "system", "content": "math " * 100}, {"role": "user", "content": "a story"}]
    )
    assert steered.ranked[0] == "chatty"
    await embedder.aclose()


async def test_a_router_trained_for_another_pool_is_refused() -> None:
    other = [ExpertDescriptor("gpt-4", 10.0, 30.0), ExpertDescriptor("mathy", 1.0, 1.0)]
    with pytest.raises(PoolMismatchError, match="gpt-4"):
        build_routers(EXPERTS, DotRouter().fit_pool(other))


async def test_cost_weight_trades_quality_for_price() -> None:
    experts = [ExpertDescriptor("good", 10.0, 10.0), ExpertDescriptor("cheap", 0.1, 0.1)]

    class Fixed(Router):
        name = "fixed"
        uses_embeddings = False

        def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
            return np.array([[0.8, 0.6]] * len(queries))

    service = RoutingService(
        experts, {"fixed": Fixed().fit_pool(experts)}, "fixed", Policy(), None, 256
    )
    ask = [{"role": "user", "content": "hi"}]
    assert (await service.decide(ask)).ranked[0] == "good"
    assert (await service.decide(ask, cost_weight=0.5)).ranked[0] == "cheap"


async def test_queries_embedded_together_are_scored_in_one_call() -> None:
    calls: list[int] = []

    class CountingRouter(DotRouter):
        def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
            calls.append(len(queries))
            return super().score(embeddings, queries)

    gate = threading.Event()
    router = CountingRouter().fit_pool(EXPERTS)
    routing = RoutingService(
        EXPERTS, {"dot": router}, "dot", Policy(), BatchingEmbedder(KeywordEmbedder(gate)), 100
    )
    first = asyncio.create_task(routing.decide([{"role": "user", "content": "warm up"}]))
    await asyncio.sleep(0.05)
    texts = ["math 1", "chat 2", "math 3", "chat 4"]
    rest = [asyncio.create_task(routing.decide([{"role": "user", "content": t}])) for t in texts]
    await asyncio.sleep(0.05)
    gate.set()
    await first
    decisions = await asyncio.gather(*rest)
    assert calls == [1, 4]  # the four that were embedded together: one scoring call
    assert [d.ranked[0] for d in decisions] == ["mathy", "chatty", "mathy", "chatty"]


class _Counting(DotRouter):
    """`DotRouter` that counts the rows it scores; `online_updates_` as a learning router has."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.online_updates_ = 0

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        self.rows.extend(queries)
        return super().score(embeddings, queries)


async def test_a_question_asked_again_is_not_scored_again() -> None:
    router = _Counting().fit_pool(EXPERTS)
    routing = RoutingService(
        EXPERTS, {"dot": router}, "dot", Policy(), BatchingEmbedder(KeywordEmbedder()), 100
    )
    ask = [{"role": "user", "content": "math again"}]
    first, again = await routing.decide(ask), await routing.decide(ask)
    assert router.rows == ["math again"]
    assert again.scores == first.scores and again.ranked == first.ranked == ["mathy", "chatty"]
    router.online_updates_ += 1  # it learned: what it said before no longer holds
    await routing.decide(ask)
    assert router.rows == ["math again", "math again"]


async def test_remembered_rows_are_read_only_and_bounded() -> None:
    from api.embedding import ScoreBatcher

    router = _Counting().fit_pool(EXPERTS)
    batcher = ScoreBatcher(cache_size=2)
    vectors = {t: np.array([1.0, 0.0], np.float32) + i for i, t in enumerate("abc")}
    rows = [await batcher.score(router, v, t) for t, v in vectors.items()]
    with pytest.raises(ValueError, match="read-only"):
        rows[0][0] = 1.0
    await batcher.score(router, vectors["c"], "c")  # remembered
    await batcher.score(router, vectors["a"], "a")  # evicted by the bound: scored again
    assert router.rows == ["a", "b", "c", "a"]
    off = ScoreBatcher(cache_size=0)
    for _ in range(2):
        await off.score(router, vectors["a"], "a")
    assert router.rows[-2:] == ["a", "a"]
