"""OpenAI's request and stream shapes, as servers that differ from it get and give them."""

from __future__ import annotations

from pathlib import Path

from experts.client import _tool_calls_once
from experts.engines.llamacpp import LlamaCppEngine
from experts.pool import ExpertConfig


def test_llamacpp_gets_tool_turns_and_json_schemas_in_its_own_form(tmp_path: Path) -> None:
    config = ExpertConfig(name="s", engine="llamacpp", gguf=Path("s.gguf"))
    engine = LlamaCppEngine(config, tmp_path)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    payload = engine.prepare(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "1"},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
    )
    assert payload["messages"][1] == {"role": "assistant", "tool_calls": [call], "content": ""}
    assert payload["messages"][0] == {"role": "user", "content": "hi"}
    assert payload["response_format"] == {"type": "json_object", "schema": schema}
    plain = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}}
    assert engine.prepare(dict(plain)) == plain


def test_repeated_tool_call_fields_are_sent_once() -> None:
    def chunk(arguments: str) -> dict[str, object]:
        call = {"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": arguments}}  # fmt: skip
        delta = {"tool_calls": [call], "function_call": {"name": "get_weather"}}
        return {"choices": [{"index": 0, "delta": delta}]}

    named: set[tuple[int, int]] = set()
    events = [chunk('{"ci'), chunk('ty": 1}')]
    for event in events:
        _tool_calls_once(event, named)
    first, second = (e["choices"][0]["delta"] for e in events)  # type: ignore[index]
    function = {"name": "get_weather", "arguments": '{"ci'}
    assert first == {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": function}]
    }
    assert second == {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": 1}'}}]}
