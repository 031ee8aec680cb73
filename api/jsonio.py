"""JSON on the chat path by orjson: the answers, the streamed events and the request log's
records are written several times faster than by `json`, byte for byte the same compact,
UTF-8 JSON that Starlette's `JSONResponse` writes. What orjson refuses (integers past 64 bits,
NaN read from an expert) falls back to `json`, so nothing that worked before fails now.

    body = dumps({"id": "chatcmpl-1", "choices": []})   # bytes
    return JSONBody(answer, headers=headers)
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.responses import JSONResponse

__all__ = ["JSONBody", "dumps", "loads"]


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (NaN and infinities as `null`, as orjson writes them)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-string key
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)


class JSONBody(JSONResponse):
    """Starlette's `JSONResponse`, rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
