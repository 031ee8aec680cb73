"""The in-process store: the embedded default, nothing to install, lost on restart."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

from api.store.base import FeedbackRecord, RequestRecord, Store

__all__ = ["MemoryStore"]

_R = TypeVar("_R", RequestRecord, FeedbackRecord)


def _since(records: deque[_R], since: float, limit: int) -> list[_R]:
    # A scan, not a bisection: records are appended when a request ends, so a long request's
    # record (stamped with its arrival) can follow a later, shorter one.
    items = [r for r in records if r.ts >= since]
    return items[-limit:] if limit > 0 else []


class MemoryStore(Store):
    """Keeps the newest `max_requests` requests and feedback records in memory."""

    def __init__(self, max_requests: int = 100_000) -> None:
        self.max_requests = max_requests
        self._requests: deque[RequestRecord] = deque(maxlen=max_requests)
        self._by_id: dict[str, RequestRecord] = {}
        self._feedback: deque[FeedbackRecord] = deque(maxlen=max_requests)

    async def log_request(self, record: RequestRecord) -> None:
        if len(self._requests) == self._requests.maxlen:
            self._by_id.pop(self._requests[0].request_id, None)
        self._requests.append(record)
        self._by_id[record.request_id] = record

    async def requests(self, since: float = 0.0, limit: int = 10_000) -> list[RequestRecord]:
        return _since(self._requests, since, limit)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        return self._by_id.get(request_id)

    async def add_feedback(self, record: FeedbackRecord) -> None:
        self._feedback.append(record)

    async def feedback(self, since: float = 0.0, limit: int = 10_000) -> list[FeedbackRecord]:
        return _since(self._feedback, since, limit)
