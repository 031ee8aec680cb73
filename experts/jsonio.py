"""JSON by orjson, several times faster than `json` on expert answers, streamed events and log
records: compact UTF-8, what Starlette's `JSONResponse` writes. What orjson refuses (integers
past 64 bits, NaN read from an expert) falls back to `json`, so nothing that worked before
fails now. `api.jsonio` adds the response class on top.

    body = dumps({"id": "chatcmpl-1", "choices": []})   # bytes
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "loads"]


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
