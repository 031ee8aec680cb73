"""The settle step: log a request once it has ended, then run what must follow the log (the
budget's settling and the metrics, the pipeline's `on_end`), however it ended: answered,
refused, a stream that ended early or whose client went away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable

from api.errors import APIError
from api.meta import CoeMeta, OnEnd, request_record
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.store import RequestRecord, Store

__all__ = ["Ended", "RequestLog"]

#: Ends a stream once (see `RequestLog.ender`): called with the status and error to log.
Ended = Callable[[int, str | None], Awaitable[None]]


class RequestLog:
    """Writes the request log (`Store.log_request`) and runs each request's `on_end` after."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._finishing: set[asyncio.Task[None]] = set()

    async def write(
        self,
        record: RequestRecord,
        request: ChatCompletionRequest,
        key_id: str | None = None,
        on_end: OnEnd | None = None,
    ) -> None:
        """Log `record` (and run `on_end`) in a task of its own: a stream whose client went away
        ends inside a cancelled scope, where an await of ours (a Redis round trip, the budget
        settling) may be cancelled; the shielded task finishes regardless."""
        if self.settings.log_prompts:
            record.prompt = json.dumps([m.model_dump() for m in request.messages])
        record.key_id = key_id

        async def finish() -> None:
            await self.store.log_request(record)
            if on_end is not None:
                await on_end(record)

        task = asyncio.create_task(finish(), name=f"coe-log-{record.request_id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        await asyncio.shield(task)

    async def failure(
        self,
        request: ChatCompletionRequest,
        request_id: str,
        arrived: float,
        exc: APIError,
        key_id: str | None = None,
        on_end: OnEnd | None = None,
    ) -> None:
        """Log a request refused with `exc` (which experts it tried, and which failed)."""
        tried = [str(t.get("expert")) for t in (exc.extra or {}).get("tried", [])]
        record = request_record(request, request_id, arrived, None, exc.status_code, exc.message)
        record.tried = tried
        record.failed = [
            str(t.get("expert")) for t in (exc.extra or {}).get("tried", []) if t.get("error")
        ]
        await self.write(record, request, key_id, on_end)

    def ender(
        self,
        events: AsyncGenerator[bytes, None],
        request: ChatCompletionRequest,
        request_id: str,
        arrived: float,
        meta: CoeMeta,
        key_id: str | None,
        on_end: OnEnd | None,
    ) -> Ended:
        """What ends a stream, once, however it ended: close `events` (its `finally` frees the
        expert's slot and settles `meta` to what was streamed), then log with `status`."""

        async def ended(status: int, error: str | None) -> None:
            try:
                await events.aclose()
            finally:  # even when a cancelled scope cancels that await
                record = request_record(request, request_id, arrived, meta, status, error)
                await self.write(record, request, key_id, on_end)

        return ended
