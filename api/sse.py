"""Server-sent events as the OpenAI streaming protocol writes them, shared by every stream the
gateway sends (one expert, a cascade, a composition): an event per JSON chunk, and the closing
chunk that carries `coe` (and `usage` when the client asked for it) before `[DONE]`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from api.errors import error_body
from api.jsonio import dumps

if TYPE_CHECKING:
    from api.meta import CoeMeta
    from api.schemas import ChatCompletionRequest

__all__ = ["DONE", "closing", "failed", "sse", "whole"]

Json = dict[str, Any]

DONE = b"data: [DONE]\n\n"


def sse(data: Json) -> bytes:
    """One event: `data: <compact JSON>` and a blank line."""
    return b"data: " + dumps(data) + b"\n\n"


def failed(message: str, code: str | None = None) -> list[bytes]:
    """The last events of a stream whose expert failed mid-answer: OpenAI's error envelope as
    an event (the status line went out with the first chunk), then `[DONE]`."""
    return [sse(error_body(message, "server_error", code=code)), DONE]


def closing(
    meta: CoeMeta, chunk: Json, request: ChatCompletionRequest, expert: str | None
) -> list[bytes]:
    """The last events of a stream: a chunk with no choices carrying `coe` (and `usage` when
    `stream_options.include_usage` was set), then `[DONE]`."""
    final: Json = {**chunk, "model": expert, "choices": [], "coe": meta.as_json()}
    if request.include_usage:
        final["usage"] = {
            "prompt_tokens": meta.prompt_tokens,
            "completion_tokens": meta.completion_tokens,
            "total_tokens": meta.prompt_tokens + meta.completion_tokens,
        }
    return [sse(final), DONE]


async def whole(
    text: str, meta: CoeMeta, chunk: Json, request: ChatCompletionRequest, expert: str | None
) -> AsyncGenerator[bytes, None]:
    """An answer that is already whole (a cascade that stopped on a paid answer, a chosen or
    fallback composition) as a stream: one content chunk, a stop chunk, then `closing`."""
    delta = {"role": "assistant", "content": text}
    yield sse(
        {**chunk, "model": expert, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    )
    yield sse(
        {**chunk, "model": expert, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    for event in closing(meta, chunk, request, expert):
        yield event
