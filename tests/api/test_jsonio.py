"""orjson on the chat path writes what Starlette's `JSONResponse` wrote, and falls back to
`json` for what orjson refuses."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

from api.jsonio import JSONBody, dumps, loads
from api.sse import sse

VALUE = {"id": "chatcmpl-1", "choices": [{"message": {"content": "quatre, vier, 四"}}], "n": 1.5}


def test_bodies_are_byte_for_byte_starlettes() -> None:
    assert JSONBody(VALUE).body == JSONResponse(VALUE).body
    assert dumps(VALUE) == json.dumps(VALUE, ensure_ascii=False, separators=(",", ":")).encode()


def test_what_orjson_refuses_falls_back_to_json() -> None:
    big = {"n": 2**70, 1: "non-string key"}
    assert json.loads(dumps(big)) == {"n": 2**70, "1": "non-string key"}
    assert loads(b'{"x": NaN}')["x"] != loads(b'{"x": NaN}')["x"]  # NaN, read by json
    assert loads(memoryview(b'{"x": 1}')) == {"x": 1}


def test_an_event_is_compact_json_then_a_blank_line() -> None:
    assert sse({"a": [1, "é"]}) == 'data: {"a":[1,"é"]}\n\n'.encode()
