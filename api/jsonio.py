"""The chat path's JSON responses rendered by orjson (`experts.jsonio`), byte for byte the
compact UTF-8 JSON that Starlette's `JSONResponse` writes.

    return JSONBody(answer, headers=headers)
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from experts.jsonio import dumps, loads

__all__ = ["JSONBody", "dumps", "loads"]


class JSONBody(JSONResponse):
    """Starlette's `JSONResponse`, rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
