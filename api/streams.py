"""The streamed response every chat stream goes out as (one expert, a cascade, a composition):
started once the first event is in hand, bounded in time, and ended exactly once (`Ended`,
from the settle step) however it ends."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.settle import Ended

__all__ = ["GuardedStream", "respond"]


class GuardedStream(StreamingResponse):
    """A streamed response that cannot hold an expert: the whole response, a slow reader
    included, is bounded by `deadline_s`; a body cut short is closed (and so logged) at once,
    not when the garbage collector finds it; and `abandoned` runs when the body was never read
    (the client went away before the first byte)."""

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        abandoned: Callable[[], Awaitable[None]],
        deadline_s: float,
        **kwargs: Any,
    ) -> None:
        self._body, self._abandoned, self._deadline_s = body, abandoned, deadline_s
        self._started = False
        super().__init__(self._read(), **kwargs)

    async def _read(self) -> AsyncGenerator[bytes, None]:
        self._started = True
        try:
            async for chunk in self._body:
                yield chunk
        finally:  # closing this closes what it reads (Starlette, a test)
            await self._body.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with anyio.move_on_after(self._deadline_s):
                await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            if not self._started:
                await self._abandoned()


async def respond(
    events: AsyncGenerator[bytes, None], ended: Ended, headers: dict[str, str], deadline_s: float
) -> StreamingResponse:
    """The response for `events`, started here: the expert's first event has arrived (it is
    the fallback point), and a started generator's `finally` runs on `aclose()`, so the expert
    is freed even if the client leaves before the body is read."""
    first = await anext(events, None)
    return GuardedStream(
        _logged(first, events, ended),
        lambda: ended(499, "the client went away before the answer started"),
        deadline_s,
        media_type="text/event-stream",
        headers=headers | {"cache-control": "no-cache"},
    )


async def _logged(
    first: bytes | None, events: AsyncGenerator[bytes, None], ended: Ended
) -> AsyncGenerator[bytes, None]:
    """Relay `first` and `events`, then end the stream however it ended (a client that goes
    away mid-answer is logged as 499, nginx's "client closed request")."""
    error: str | None = "the client went away mid-answer"
    status = 499
    try:
        while first is not None:
            if first.startswith(b'data: {"error"'):
                error, status = first[6:].decode(errors="replace").strip()[:500], 200
            yield first
            first = await anext(events, None)
        if status == 499:
            error, status = None, 200
    finally:
        await ended(status, error)
