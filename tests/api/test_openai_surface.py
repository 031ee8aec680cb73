"""The rest of the OpenAI surface against fake experts: capabilities respected by routing,
tool and multimodal messages passed through, and `/v1/completions`, `/v1/embeddings`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.keys import new_key
from api.settings import Settings
from experts.errors import PoolConfigError
from experts.pool import ExpertConfig, load_pool
from experts.testing import FakeExpert, FakeNetwork
from tests.conftest import POOL, Gateway, write_pool

HELLO = [{"role": "user", "content": "Say hello"}]
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    """alpha (cheap): text only, no tools, serves embeddings; beta: tools, images, completions,
    a 300-token context."""
    pool: dict[str, Any] = json.loads(json.dumps(POOL))
    pool["experts"][0] |= {"tools": False, "endpoints": ["embeddings"]}
    pool["experts"][1] |= {"modalities": ["text", "image"], "context_length": 300}
    fakes = {"alpha": FakeExpert("alpha", "alpha says hi"), "beta": FakeExpert("beta", "beta hi")}
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", pool),
        work_dir=tmp_path / "work",
        _env_file=None,  # type: ignore[call-arg]
    )
    network = FakeNetwork(fakes)
    app = create_app(settings, transport=network)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(app, client, fakes, network)


async def chat(gw: Gateway, **body: Any) -> httpx.Response:
    return await gw.client.post("/v1/chat/completions", json={"model": "coe-auto"} | body)


async def test_models_list_each_experts_capabilities(gw: Gateway) -> None:
    data = {m["id"]: m.get("coe") for m in (await gw.client.get("/v1/models")).json()["data"]}
    assert data["alpha"] is not None and data["beta"] is not None
    assert (data["alpha"]["tools"], data["alpha"]["modalities"]) == (False, ["text"])
    assert data["alpha"]["endpoints"] == ["chat", "embeddings"]
    assert data["beta"]["modalities"] == ["text", "image"]
    assert data["beta"]["endpoints"] == ["chat", "completions"]


async def test_routing_skips_experts_that_lack_what_the_request_needs(gw: Gateway) -> None:
    assert (await chat(gw, messages=HELLO)).json()["model"] == "alpha"  # the cheaper one
    with_tools = await chat(gw, messages=HELLO, tools=TOOLS, tool_choice="auto")
    assert with_tools.json()["model"] == "beta"
    assert gw.fakes["beta"].requests[-1]["tools"] == TOOLS
    assert gw.fakes["beta"].requests[-1]["tool_choice"] == "auto"
    assert (await chat(gw, messages=IMAGE)).json()["model"] == "beta"
    assert gw.fakes["beta"].requests[-1]["messages"] == IMAGE  # parts passed on unchanged
    route = await gw.client.post("/v1/route", json={"model": "coe-auto", "messages": IMAGE})
    excluded = {e["name"]: e["excluded"] for e in route.json()["experts"]}
    assert excluded == {"alpha": "does not read image content (pool: modalities)", "beta": None}


async def test_no_capable_expert_is_a_400_naming_the_need(gw: Gateway) -> None:
    long = [{"role": "user", "content": "word " * 400}]
    r = await chat(gw, messages=long, tools=TOOLS)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    message = r.json()["error"]["message"]
    assert "alpha: does not support tools" in message and "beta: context of 300 tokens" in message


async def test_an_expert_named_directly_refuses_what_it_cannot_take(gw: Gateway) -> None:
    r = await chat(gw, model="alpha", messages=IMAGE)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    assert "'alpha' does not read image content" in r.json()["error"]["message"]
    r = await chat(gw, model="alpha", messages=HELLO, tools=TOOLS)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    assert not gw.fakes["alpha"].requests  # refused before any call


async def test_tool_turns_and_sampling_options_reach_the_expert_unchanged(gw: Gateway) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
    options = {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
        "seed": 3,
        "stop": ["\n\n"],
        "logprobs": True,
        "top_logprobs": 2,
    }
    r = await chat(gw, model="beta", messages=messages, **options)
    assert r.status_code == 200
    sent = gw.fakes["beta"].requests[-1]
    # `content: null` goes upstream as no content (OpenAI allows both; llama.cpp only this)
    assert sent["messages"] == [messages[0], {"role": "assistant", "tool_calls": [call]},
                                messages[2]]  # fmt: skip
    assert {k: sent[k] for k in options} == options


async def test_n_above_one_is_a_clear_400(gw: Gateway) -> None:
    r = await chat(gw, messages=HELLO, n=2)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


async def test_completions_pass_through_with_log_and_metrics(gw: Gateway) -> None:
    body = {"model": "beta", "prompt": "Once upon a time", "temperature": 0.2}
    r = await gw.client.post("/v1/completions", json=body)
    assert r.status_code == 200
    answer = r.json()
    assert answer["choices"][0]["text"] == "beta hi" and answer["model"] == "beta"
    assert answer["coe"]["experts"] == ["beta"]
    sent = gw.fakes["beta"].requests[-1]
    assert sent["prompt"] == "Once upon a time" and sent["model"] == "org/beta-7b"
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0.2
    (record,) = await gw.app.state.store.requests()
    assert record.request_id == r.headers["x-request-id"] and record.experts == ["beta"]
    assert (record.prompt_tokens, record.completion_tokens) == (4, 2)
    assert record.cost_usd == pytest.approx((4 * 3.0 + 2 * 6.0) / 1e6)
    metrics = (await gw.client.get("/metrics")).text
    assert 'coe_requests_total{expert="beta",model="beta",status="200"} 1.0' in metrics


async def test_streamed_completions_are_relayed_and_settled(gw: Gateway) -> None:
    gw.fakes["beta"].enqueue("one two three")
    body = {"model": "beta", "prompt": "Count", "stream": True}
    r = await gw.client.post("/v1/completions", json=body)
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "onetwothree"
    assert {c["id"] for c in chunks} == {r.headers["x-request-id"]}
    (record,) = await gw.app.state.store.requests()
    assert record.status == 200 and record.completion_tokens == 3 and not record.usage_estimated


async def test_embeddings_go_to_an_expert_that_lists_them(gw: Gateway) -> None:
    r = await gw.client.post("/v1/embeddings", json={"model": "alpha", "input": ["a", "bb"]})
    assert r.status_code == 200
    assert [d["embedding"][0] for d in r.json()["data"]] == [1.0, 2.0]
    (record,) = await gw.app.state.store.requests()
    assert record.experts == ["alpha"] and record.prompt_tokens == 2


@pytest.mark.parametrize(
    ("path", "model", "serving"),
    [
        ("/v1/embeddings", "beta", "alpha"),
        ("/v1/completions", "alpha", "beta"),
        ("/v1/completions", "coe-auto", "beta"),
        ("/v1/completions", "nope", "beta"),
    ],
)
async def test_other_models_get_openais_404_naming_those_that_serve_it(
    gw: Gateway, path: str, model: str, serving: str
) -> None:
    r = await gw.client.post(path, json={"model": model, "prompt": "x", "input": "x"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["message"].endswith(f"models that do: {serving}")


async def test_passthrough_requests_use_the_keys_limits(gw: Gateway) -> None:
    secret, key = new_key("one-a-minute", rpm=1)
    await gw.app.state.store.add_key(key)
    body = {"model": "beta", "prompt": "hi"}
    assert (await gw.client.post("/v1/completions", json=body)).status_code == 401
    auth = {"authorization": f"Bearer {secret}"}
    assert (await gw.client.post("/v1/completions", json=body, headers=auth)).status_code == 200
    refused = await gw.client.post("/v1/completions", json=body, headers=auth)
    assert refused.status_code == 429 and "retry-after" in refused.headers


def test_pool_capabilities_are_checked_when_the_pool_loads(tmp_path: Path) -> None:
    local = {"name": "tiny", "engine": "llamacpp", "gguf": "x.gguf"}
    assert not ExpertConfig.model_validate(local).supports_tools
    fc = ExpertConfig.model_validate(local | {"chat_format": "chatml-function-calling"})
    assert fc.supports_tools and fc.served_endpoints == ("chat", "completions")
    remote = ExpertConfig.model_validate({"name": "r", "engine": "openai", "base_url": "http://r"})
    assert remote.supports_tools and remote.served_endpoints == ("chat",)
    bad = {"experts": [local | {"tools": True, "chat_format": "gemma"}]}
    with pytest.raises(PoolConfigError, match=r"experts\[0\]\.tools|tools: true needs"):
        load_pool(write_pool(tmp_path / "bad.yaml", bad))
    with pytest.raises(PoolConfigError, match="modalities"):
        load_pool(
            write_pool(tmp_path / "bad2.yaml", {"experts": [local | {"modalities": ["smell"]}]})
        )
