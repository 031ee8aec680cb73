"""coe-compose for real: two llama.cpp experts behind `coe serve` under uvicorn, driven by the
official `openai` client. Answers are kept short (max_tokens) so this takes seconds."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.test_integration_llamacpp import Served, needs_llamacpp, smol

pytestmark = [pytest.mark.integration, needs_llamacpp]

ASK = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    server = Served(
        tmp_path_factory.mktemp("compose"), [smol("smol-a", 0.01), smol("smol-b", 0.02)]
    )
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    server.stop()


def test_aggregate_two_real_experts(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="coe-compose", messages=ASK, max_tokens=12, temperature=0,  # type: ignore[arg-type]
        extra_body={"coe": {"strategy": "aggregate", "k": 2}},
    )  # fmt: skip
    assert r.choices[0].message.content
    coe = r.model_extra["coe"]  # type: ignore[index]
    answers = coe["compose"]["answers"]
    assert [(a["expert"], a["role"]) for a in answers] == [
        ("smol-a", "proposer"),
        ("smol-b", "proposer"),
        ("smol-a", "aggregator"),  # the cheapest router ranks smol-a first
    ]
    assert all(a["content"] and a["completion_tokens"] <= 12 for a in answers)
    # the aggregator saw both proposals: its prompt is longer than the question alone
    assert answers[2]["prompt_tokens"] > answers[0]["prompt_tokens"] + 10
    assert coe["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in answers))
    assert r.usage is not None and r.usage.prompt_tokens == coe["usage"]["prompt_tokens"]


def test_streamed_composition_and_vote(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="coe-compose", messages=ASK, max_tokens=12, temperature=0, stream=True,  # type: ignore[arg-type]
        extra_body={"coe": {"strategy": "aggregate", "k": 2}},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert sum(1 for c in chunks if c.choices) >= 2  # the aggregator's answer, as it is written
    meta = chunks[-1].model_extra["coe"]  # type: ignore[index]
    assert meta["compose"]["answers"][-1]["content"] == text
    r = client.chat.completions.create(
        model="coe-compose", messages=ASK, max_tokens=8, temperature=0,  # type: ignore[arg-type]
        extra_body={"coe": {"strategy": "vote", "k": 2}},
    )  # fmt: skip
    assert r.model_extra["coe"]["compose"]["votes"]  # type: ignore[index]
