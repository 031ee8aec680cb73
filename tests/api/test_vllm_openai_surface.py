"""The OpenAI surface through a real `coe serve` gateway into a real vLLM server, with the official
client: tools and `tool_choice`, tool turns (an assistant turn with `tool_calls` and content
null, then `tool` messages), JSON mode and schemas, seed, stop, logprobs, `n` (coe's 400),
streamed tool-call deltas, and `/v1/completions` passed through.

The llama.cpp twin is `tests/api/test_integration_openai_surface.py`; these reuse its request
bodies and the gateway harness of `tests/api/test_integration_llamacpp.py`. The assertions are
about the protocol surviving the trip (accepted, the right shapes, coe's metadata), not about a
135M model's skill. Outside the default run (marker `vllm`); `tests/experts/vllm_cpu.sh` sets up
a vLLM CPU server (`--enable-auto-tool-choice --tool-call-parser hermes`) and runs them. Or::

    COE_TEST_VLLM_URL=http://127.0.0.1:8100/v1 COE_TEST_VLLM_MODEL=smollm2 \
        .venv/bin/pytest -m vllm tests/api/test_vllm_openai_surface.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.api.test_integration_llamacpp import Served
from tests.api.test_integration_openai_surface import ASK, FORCE, WEATHER

URL = os.environ.get("COE_TEST_VLLM_URL")
MODEL = os.environ.get("COE_TEST_VLLM_MODEL", "smollm2")

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(URL is None, reason="set COE_TEST_VLLM_URL to a vLLM server's /v1"),
]


# vLLM (0.32) constrains a forced call's envelope and name; its arguments follow the schema only
# for a tool marked `strict` (OpenAI's field, passed through by coe) or a server started with
# `--tool-strict-level parameter`. Without it SmolLM2 writes e.g. `"arguments": "Paris"`.
STRICT = {"type": "function", "function": {**WEATHER["function"], "strict": True}}  # type: ignore[dict-item]


def city(arguments: str) -> str:
    """The `city` of get_weather's arguments, which must be a JSON object with one."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict) and isinstance(parsed["city"], str), arguments
    return parsed["city"]


def remote(name: str, engine: str, price: float, **extra: object) -> dict[str, object]:
    """One pool entry for the vLLM server under test (both experts share the one server)."""
    return {"name": name, "engine": engine, "base_url": URL, "model": MODEL,
            "input_price": price, "output_price": 2 * price, "context_length": 2048,
            "max_concurrency": 2, "descriptor": "SmolLM2 135M on vLLM", "skills": ["chat"],
            **extra}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # the cheaper expert is marked without tools, so a request with tools must skip it
    plain = remote("vllm-plain", "openai", 0.01, tools=False)
    tools = remote("vllm-tools", "vllm", 0.02, endpoints=["completions"])
    server = Served(tmp_path_factory.mktemp("vllm-surface"), [plain, tools])
    yield server
    server.stop()


@pytest.fixture
def client(served: Served) -> Iterator[openai.OpenAI]:
    # closed after each test: an open connection pool is an unraisable ResourceWarning at exit
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def coe(answer: Any) -> dict[str, Any]:
    """coe's metadata on an answer (or a stream's last chunk)."""
    meta: dict[str, Any] = answer.model_extra["coe"]
    return meta


def test_forced_tool_call_and_the_tool_turns(client: openai.OpenAI) -> None:
    loose = client.chat.completions.create(
        model="coe-auto", messages=ASK, tools=[WEATHER], tool_choice=FORCE, max_tokens=64,
        temperature=0,
    )  # fmt: skip
    assert loose.model == "vllm-tools"  # the cheaper vllm-plain is marked without tools
    (call,) = loose.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    json.loads(call.function.arguments)  # JSON, though not necessarily the schema's

    answer = client.chat.completions.create(
        model="coe-auto", messages=ASK, tools=[STRICT], tool_choice=FORCE, max_tokens=64,
        temperature=0,
    )  # fmt: skip
    assert answer.model == "vllm-tools" and coe(answer)["experts"] == ["vllm-tools"]
    assert answer.choices[0].finish_reason in ("tool_calls", "stop")
    (call,) = answer.choices[0].message.tool_calls or []
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert city(call.function.arguments)

    follow_up = client.chat.completions.create(
        model="coe-auto",
        messages=[
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'},
        ],
        tools=[WEATHER],
        max_tokens=32,
        temperature=0,
    )
    assert follow_up.model == "vllm-tools"
    message = follow_up.choices[0].message
    assert message.content or message.tool_calls


def test_tool_choice_auto_required_and_none(client: openai.OpenAI) -> None:
    """`auto` needs the server's `--enable-auto-tool-choice`; the model may or may not call."""
    for choice in ("auto", "required", "none"):
        answer = client.chat.completions.create(
            model="coe-auto", messages=ASK, tools=[WEATHER], tool_choice=choice, max_tokens=48,
            temperature=0,
        )  # fmt: skip
        assert answer.model == "vllm-tools"
        message = answer.choices[0].message
        assert message.content is not None or message.tool_calls
        if choice == "none":
            assert not message.tool_calls
        if choice == "required":
            assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"


def test_streamed_tool_call_deltas_assemble_into_a_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="coe-auto", messages=ASK, tools=[STRICT], tool_choice=FORCE, max_tokens=64,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    ids, name, arguments, deltas, last = "", "", "", 0, None
    for chunk in stream:
        last = chunk
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                deltas += 1
                ids += delta.id or ""
                name += (delta.function.name or "") if delta.function else ""
                arguments += (delta.function.arguments or "") if delta.function else ""
    assert deltas >= 1 and name == "get_weather" and ids
    assert city(arguments)
    assert last is not None and last.choices == [] and last.usage is not None
    assert coe(last)["experts"] == ["vllm-tools"]


def test_json_mode_and_json_schema(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="vllm-plain",
        messages=[{"role": "user", "content": "Give a JSON object with a key 'city'."}],
        response_format={"type": "json_object"},
        max_tokens=128,
        temperature=0,
    )
    assert answer.model == "vllm-plain"
    if answer.choices[0].finish_reason == "stop":  # a 135M model may ramble past max_tokens
        assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model="vllm-tools",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        max_tokens=128,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "stop"  # the schema bounds the object
    person = json.loads(answer.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_seed_stop_and_logprobs(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Write a short poem about the sea."}]
    twice = [
        client.chat.completions.create(
            model="vllm-plain", messages=ask, seed=7, temperature=1.0, max_tokens=24
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert twice[0] == twice[1]
    stopped = client.chat.completions.create(
        model="vllm-plain", messages=ask, stop=["\n"], max_tokens=48
    )
    assert "\n" not in (stopped.choices[0].message.content or "")
    with_logprobs = client.chat.completions.create(
        model="vllm-plain", messages=ask, logprobs=True, top_logprobs=2, max_tokens=4
    )
    content = with_logprobs.choices[0].logprobs
    assert content is not None and content.content and content.content[0].logprob <= 0
    assert len(content.content[0].top_logprobs) == 2
    short = client.chat.completions.create(model="vllm-plain", messages=ask,
                                           max_completion_tokens=3)  # fmt: skip
    assert short.usage is not None and short.usage.completion_tokens <= 3
    assert short.choices[0].finish_reason == "length"


def test_n_is_a_clear_400(client: openai.OpenAI) -> None:
    for model in ("coe-auto", "vllm-plain"):
        with pytest.raises(openai.BadRequestError) as n:
            client.chat.completions.create(model=model, messages=ASK, n=2)
        assert n.value.body["param"] == "n"  # type: ignore[index]


def test_completions_pass_through(client: openai.OpenAI) -> None:
    text = client.completions.create(model="vllm-tools", prompt="The capital of France is",
                                     max_tokens=8, temperature=0)  # fmt: skip
    assert text.choices[0].text and text.model == "vllm-tools"
    assert text.usage is not None and text.usage.completion_tokens <= 8
    pieces = client.completions.create(model="vllm-tools", prompt="One, two,", max_tokens=8,
                                       stream=True)  # fmt: skip
    assert "".join(p.choices[0].text for p in pieces if p.choices)
    with pytest.raises(openai.NotFoundError, match="does not serve /v1/embeddings"):
        client.embeddings.create(model="vllm-tools", input="hello")
