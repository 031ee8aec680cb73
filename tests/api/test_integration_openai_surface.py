"""The OpenAI surface through the real gateway into real llama.cpp experts, with the official
client: tools (a function-calling chat format), tool turns, JSON mode and schemas, seed, stop,
logprobs, n, images to text-only experts, streamed tool-call deltas, completions, embeddings."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.api.test_integration_llamacpp import Served, needs_llamacpp, smol

pytestmark = [pytest.mark.integration, needs_llamacpp]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
FORCE = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tools = smol("smol-tools", 0.02) | {
        "chat_format": "chatml-function-calling",
        "endpoints": ["completions", "embeddings"],
    }
    plain = smol("smol-plain", 0.01)  # cheaper; its chat template ignores tools
    server = Served(tmp_path_factory.mktemp("surface"), [plain, tools])
    yield server
    server.stop()


@pytest.fixture
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


def test_tools_route_to_the_expert_that_calls_functions(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="coe-auto", messages=ASK, tools=[WEATHER], tool_choice=FORCE, max_tokens=64
    )
    assert answer.model == "smol-tools"  # the cheaper smol-plain cannot take tools
    (call,) = answer.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)

    # the tool's result goes back as an assistant turn with content null, then a tool turn
    follow_up = client.chat.completions.create(
        model="coe-auto",
        messages=[
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'},
        ],
        tools=[WEATHER],
        max_tokens=32,
    )
    assert follow_up.model == "smol-tools"
    message = follow_up.choices[0].message
    assert message.content or message.tool_calls


def test_streamed_tool_call_deltas_assemble_into_a_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="coe-auto", messages=ASK, tools=[WEATHER], tool_choice=FORCE, max_tokens=64,
        stream=True,
    )  # fmt: skip
    # accumulated as OpenAI's clients do: every string of a call's deltas concatenated
    ids, name, arguments, deltas = "", "", "", 0
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                deltas += 1
                ids += delta.id or ""
                name += (delta.function.name or "") if delta.function else ""
                arguments += (delta.function.arguments or "") if delta.function else ""
            assert choice.delta.function_call is None  # llama.cpp's deprecated twin, dropped
    assert deltas > 1 and name == "get_weather" and ids.startswith("call_")
    assert ids.count("call_") == 1  # the id once, in the first delta, as OpenAI sends it
    assert isinstance(json.loads(arguments), dict)


def test_json_mode_and_json_schema(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="smol-tools",
        messages=[{"role": "user", "content": "Give a JSON object with a key 'city'."}],
        response_format={"type": "json_object"},
        max_tokens=256,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "stop"  # the grammar closed the object
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    answer = client.chat.completions.create(
        model="smol-plain",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        max_tokens=256,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "stop"
    person = json.loads(answer.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_seed_stop_and_logprobs(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Write a short poem about the sea."}]
    twice = [
        client.chat.completions.create(
            model="smol-plain", messages=ask, seed=7, temperature=1.0, max_tokens=24
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert twice[0] == twice[1]
    stopped = client.chat.completions.create(
        model="smol-plain", messages=ask, stop=["\n"], max_tokens=48
    )
    assert "\n" not in (stopped.choices[0].message.content or "")
    with_logprobs = client.chat.completions.create(
        model="smol-plain", messages=ask, logprobs=True, top_logprobs=2, max_tokens=4
    )
    content = with_logprobs.choices[0].logprobs
    assert content is not None and content.content and content.content[0].logprob <= 0


def test_n_and_images_are_clear_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as n:
        client.chat.completions.create(model="coe-auto", messages=ASK, n=2)
    assert n.value.body["param"] == "n"  # type: ignore[index]
    image = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]  # fmt: skip
    for model in ("coe-auto", "smol-plain"):
        with pytest.raises(openai.BadRequestError, match="image"):
            client.chat.completions.create(model=model, messages=image)  # type: ignore[arg-type]


def test_completions_and_embeddings_pass_through(client: openai.OpenAI) -> None:
    text = client.completions.create(model="smol-tools", prompt="The capital of France is",
                                     max_tokens=8, temperature=0)  # fmt: skip
    assert text.choices[0].text and text.model == "smol-tools"
    pieces = client.completions.create(model="smol-plain", prompt="One, two,", max_tokens=8,
                                       stream=True)  # fmt: skip
    assert "".join(p.choices[0].text for p in pieces if p.choices)
    vectors = client.embeddings.create(model="smol-tools", input=["hello", "world"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens > 0
    # SmolLM2 is a causal LM without a pooling head: llama.cpp returns one vector per token
    # (an embedding GGUF returns one per input); coe passes either on unchanged
    first = vectors.data[0].embedding
    assert first and all(isinstance(v, (float, list)) for v in first)
    with pytest.raises(openai.NotFoundError, match="models that do: smol-tools"):
        client.embeddings.create(model="smol-plain", input="hello")
