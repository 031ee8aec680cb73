"""An agreement chain served by `coe-auto` through the cascade executor, against fake experts.

The chain is learned (`ChainRouter`, the artifact `coe train --router chain` writes) on the
synthetic pair pool: ask cheap-a and cheap-b; when they agree, answer; else ask strong. Live,
the fakes' replies decide: agreeing cheap replies stop after two calls, disagreeing ones
escalate, and `coe.max_cost_usd` keeps strong out when it does not fit. Streams (the official
`openai` client, `stream=True`) send strong's reply piece by piece, and the last chunk carries
`coe.steps`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.app import create_app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from router.chains import Chain, ChainRouter
from tests.conftest import write_pool
from tests.router.chain_pools import COSTS, MODELS, pair_pool

pytestmark = pytest.mark.asyncio

PRICES = {"cheap-a": (0.1, 0.2), "cheap-b": (0.12, 0.24), "strong": (10.0, 20.0)}
POOL = {
    "experts": [
        {"name": m, "engine": "openai", "base_url": f"http://{m}/v1", "input_price": i,
         "output_price": o, "max_concurrency": 4}
        for m, (i, o) in PRICES.items()
    ]
}  # fmt: skip
ASK = {"model": "coe-auto", "messages": [{"role": "user", "content": "What is 3+4?"}]}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert list(PRICES) == MODELS and len(COSTS) == 3
    router = ChainRouter(share=0.5).fit(pair_pool(300, 0), np.zeros((300, 1)))
    assert router.chain_ == Chain(("cheap-a", "cheap-b", "strong"), 2)
    path = tmp_path_factory.mktemp("chain") / "chain.pkl"
    router.save(path)
    return path


@asynccontextmanager
async def gateway(
    tmp_path: Path, artifact: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeExpert]]]:
    fakes = {m: FakeExpert(m, "#### 7") for m in MODELS}
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", POOL),
        work_dir=tmp_path / "work",
        router_artifact=artifact,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings, transport=FakeNetwork(fakes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, fakes


async def test_agreeing_cheap_experts_answer_alone(tmp_path: Path, artifact: Path) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes):
        response = await client.post("/v1/chat/completions", json=ASK)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["cheap-a", "cheap-b"]
        assert body["model"] == "cheap-b" and not fakes["strong"].requests
        assert body["coe"]["cost_usd"] == pytest.approx(
            sum(s["cost_usd"] for s in body["coe"]["steps"])
        )


async def test_disagreement_escalates_to_the_strong_expert(tmp_path: Path, artifact: Path) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes):
        fakes["cheap-b"].enqueue("#### 8")
        fakes["strong"].enqueue("Carefully: 3 + 4 = 7.\n#### 7")
        body = (await client.post("/v1/chat/completions", json=ASK)).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["cheap-a", "cheap-b", "strong"]
        assert body["model"] == "strong"
        assert body["choices"][0]["message"]["content"].endswith("#### 7")
        assert all(s["cost_usd"] > 0 for s in body["coe"]["steps"])


async def test_max_cost_keeps_the_strong_expert_out(tmp_path: Path, artifact: Path) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes):
        fakes["cheap-b"].enqueue("#### 8")
        cap = 2e-4  # both cheap calls fit; strong's estimate does not
        body = (
            await client.post("/v1/chat/completions", json=ASK | {"coe": {"max_cost_usd": cap}})
        ).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["cheap-a", "cheap-b"]
        assert 0 < body["coe"]["cost_usd"] <= cap and not fakes["strong"].requests


async def test_a_streamed_chain_streams_its_last_step(tmp_path: Path, artifact: Path) -> None:
    from openai import AsyncOpenAI

    async with gateway(tmp_path, artifact) as (client, fakes):
        fakes["cheap-b"].enqueue("#### 8")
        fakes["strong"].enqueue("so the answer is 7, #### 7")
        openai = AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", http_client=client)
        stream = await openai.chat.completions.create(
            model="coe-auto",
            messages=ASK["messages"],
            stream=True,  # type: ignore[arg-type]
        )
        chunks = [chunk async for chunk in stream]
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        assert "".join(p or "" for p in pieces) == "so the answer is 7, #### 7"
        assert sum(1 for p in pieces if p) > 1  # strong's answer came piece by piece
        coe = (chunks[-1].model_extra or {})["coe"]
        assert [s["expert"] for s in coe["steps"]] == ["cheap-a", "cheap-b", "strong"]
        assert all(s["cost_usd"] > 0 for s in coe["steps"])
        assert not fakes["cheap-a"].requests[-1].get("stream")
        assert fakes["strong"].requests[-1]["stream"] is True


async def test_a_streamed_agreement_goes_out_whole_within_the_cap(
    tmp_path: Path, artifact: Path
) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes):
        cap = 2e-4
        ask = ASK | {"stream": True, "coe": {"max_cost_usd": cap}}
        async with client.stream("POST", "/v1/chat/completions", json=ask) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
        events = [json.loads(line[6:]) for line in lines]
        text = "".join(
            c["delta"].get("content") or "" for e in events for c in e.get("choices", [])
        )
        assert text == "#### 7"
        coe = events[-1]["coe"]
        assert [s["expert"] for s in coe["steps"]] == ["cheap-a", "cheap-b"]
        assert 0 < coe["cost_usd"] <= cap and not fakes["strong"].requests


@pytest.fixture(scope="module")
def trusting_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The learned router serving "cheap-a, then strong trusted alone, cheap-b only when strong
    concludes nothing" (a `trust_from` chain, as `FAMILIES['trust2']` learns them)."""
    router = ChainRouter(share=0.5).fit(pair_pool(300, 0), np.zeros((300, 1)))
    router.chain_ = Chain(("cheap-a", "strong", "cheap-b"), 2, trust_from=1)
    path = tmp_path_factory.mktemp("trusting") / "chain.pkl"
    router.save(path)
    return path


async def test_a_trusted_expert_answers_alone_when_served(
    tmp_path: Path, trusting_artifact: Path
) -> None:
    async with gateway(tmp_path, trusting_artifact) as (client, fakes):
        fakes["strong"].enqueue("Carefully: #### 9")  # disagrees with cheap-a: trusted anyway
        body = (await client.post("/v1/chat/completions", json=ASK)).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["cheap-a", "strong"]
        assert body["model"] == "strong" and not fakes["cheap-b"].requests
        fakes["strong"].enqueue("I cannot say.")  # concludes nothing: the fallback answers
        body = (await client.post("/v1/chat/completions", json=ASK)).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["cheap-a", "strong", "cheap-b"]
        assert body["model"] == "cheap-b"
