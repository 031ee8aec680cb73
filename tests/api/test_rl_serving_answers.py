"""The served cascade computes the answer features the RL router was trained on from the live
answer text: trained on responses where the cheap expert's answer concludes with `#### N`
exactly when it is right, the policy stops after a marked answer and escalates after an
unmarked one (the query itself cannot tell)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.rl import RLRouter
from tests.api.test_rl_serving import ASK, gateway, pytestmark

__all__ = ["pytestmark"]


@pytest.fixture(scope="module")
def answers_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from router.embedder import load_embedder

    rng = np.random.default_rng(0)
    n = 400
    questions = ["What is 2+2?", *(f"What is {a} times {a + 3}?" for a in range(19))]
    x = load_embedder().embed(questions)[np.arange(n) % len(questions)]
    right = rng.random(n) < 0.5
    alpha = np.where(right, "2 + 2 = 4\n#### 4", "maybe 5, not sure")
    responses = np.stack([alpha, np.full(n, "#### 4")], axis=1).astype(object)
    data = RoutingData(
        query_ids=[str(i) for i in range(n)],
        prompts=[questions[i % len(questions)] for i in range(n)],
        tasks=[None] * n,
        models=["alpha", "beta"],
        scores=np.stack([right.astype(float), np.ones(n)], axis=1),
        costs=np.tile([5.2e-5, 1.6e-3], (n, 1)),
        experts=[ExpertDescriptor("alpha", 0.1, 0.2), ExpertDescriptor("beta", 3.0, 6.0)],
        responses=responses,
    )
    router = RLRouter(
        cost_weight=0.3, cost_weight_range=(0.1, 1.0), iterations=150, batch_size=192,
        descriptor_embedder="hashing", progress=False,
    ).fit(data, x)  # fmt: skip
    assert router.observes_answers
    path = tmp_path_factory.mktemp("rl-answers") / "rl.pkl"
    router.save(path)
    return path


async def test_cascade_reads_the_live_answer_to_decide_whether_to_escalate(
    tmp_path: Path, answers_artifact: Path
) -> None:
    async with gateway(tmp_path, answers_artifact) as (client, fakes, _):
        fakes["alpha"].enqueue("2 + 2 = 4\n#### 4")
        body = (await client.post("/v1/chat/completions", json=ASK)).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["alpha"]
        fakes["alpha"].enqueue("maybe 5, not sure")
        body = (await client.post("/v1/chat/completions", json=ASK)).json()
        assert [s["expert"] for s in body["coe"]["steps"]] == ["alpha", "beta"]
        assert body["choices"][0]["message"]["content"] == "4"
