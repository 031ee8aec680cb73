"""The in-process store: the embedded default, nothing to install, lost on restart.

Also what the gateway serves from while Redis is away (`api.store.fallback`). Its limit checks
are atomic because they never await: asyncio cannot switch tasks inside them.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, TypeVar

from api.store.base import ApiKey, Charge, FeedbackRecord, RequestRecord, Store

__all__ = ["MemoryStore"]

_R = TypeVar("_R", RequestRecord, FeedbackRecord)


def _since(records: deque[_R], since: float, limit: int) -> list[_R]:
    # A scan, not a bisection: records are appended when a request ends, so a long request's
    # record (stamped with its arrival) can follow a later, shorter one.
    items = [r for r in records if r.ts >= since]
    return items[-limit:] if limit > 0 else []


class MemoryStore(Store):
    """Keeps the newest `max_requests` requests and feedback records in memory."""

    def __init__(self, max_requests: int = 100_000, max_cache_entries: int = 10_000) -> None:
        self.max_requests = max_requests
        self.max_cache_entries = max_cache_entries
        self._requests: deque[RequestRecord] = deque(maxlen=max_requests)
        self._by_id: dict[str, RequestRecord] = {}
        self._feedback: deque[FeedbackRecord] = deque(maxlen=max_requests)
        self._keys: list[ApiKey] = []
        # window name -> (expires at, value); expired windows are dropped as they are read
        self._counters: dict[str, tuple[float, int]] = {}
        self._next_sweep = 0.0
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._index: dict[str, deque[tuple[str, bytes, float]]] = {}

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

    def take_logs(self) -> tuple[list[RequestRecord], list[FeedbackRecord]]:
        """Remove and return every logged request and feedback record (to move them to Redis
        once it is back)."""
        requests, feedback = list(self._requests), list(self._feedback)
        self._requests.clear()
        self._by_id.clear()
        self._feedback.clear()
        return requests, feedback

    # --- API keys -------------------------------------------------------------------------

    def _active(self) -> list[ApiKey]:
        return [k for k in self._keys if k.revoked is None]

    async def add_key(self, key: ApiKey) -> None:
        if any(k.name == key.name for k in self._active()):
            raise ValueError(f"an active key is already named {key.name!r}")
        self._keys.append(key)

    async def lookup_key(self, key_hash: str | None) -> tuple[bool, ApiKey | None]:
        active = self._active()
        return bool(active), next((k for k in active if k.hash == key_hash), None)

    async def keys(self) -> list[ApiKey]:
        return list(self._keys)

    async def revoke_key(self, name: str) -> ApiKey | None:
        for key in self._active():
            if key.name == name:
                key.revoked = time.time()
                return key
        return None

    def replace_keys(self, keys: list[ApiKey]) -> None:
        """Mirror the shared store's keys, so that auth holds while it is away."""
        self._keys = list(keys)

    # --- rate limits and budgets -----------------------------------------------------------

    def _get(self, name: str) -> int:
        entry = self._counters.get(name)
        if entry is None or entry[0] <= time.monotonic():
            self._counters.pop(name, None)
            return 0
        return entry[1]

    def _add(self, name: str, amount: int, ttl_s: float) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:  # per-minute windows are never read again once past
            self._counters = {k: v for k, v in self._counters.items() if v[0] > now}
            self._next_sweep = now + 60
        entry = self._counters.get(name)
        if entry is None or entry[0] <= now:
            entry = (now + ttl_s, 0)
        self._counters[name] = (entry[0], entry[1] + amount)

    def take_counters(self) -> list[tuple[str, int, float]]:
        """Every live window as `(name, amount, seconds left)`, and forget them: what an outage
        counted here, to be written back to Redis."""
        now = time.monotonic()
        taken = [
            (k, v, expires - now) for k, (expires, v) in self._counters.items() if expires > now
        ]
        self._counters = {}
        return [t for t in taken if t[1] != 0]

    async def add_counters(self, counters: list[tuple[str, int, float]]) -> None:
        for name, amount, ttl_s in counters:
            self._add(name, amount, ttl_s)

    async def admit(
        self, charge: Charge, rpm: int | None, tpm: int | None, budget_nano_usd: int | None
    ) -> str | None:
        k = charge.key_id
        requests_key, tokens_key = f"rpm:{k}:{charge.minute}", f"tpm:{k}:{charge.minute}"
        budget_key = f"usd:{k}:{charge.period}"
        if rpm is not None and self._get(requests_key) >= rpm:
            return "rpm"
        used = self._get(tokens_key)
        if tpm is not None and used > 0 and used + charge.tokens > tpm:
            return "tpm"
        if budget_nano_usd is not None and (
            self._get(budget_key) + charge.nano_usd > budget_nano_usd
        ):
            return "budget"
        self._add(requests_key, 1, 120)
        self._add(tokens_key, charge.tokens, 120)
        self._add(budget_key, charge.nano_usd, charge.period_ttl_s)
        return None

    async def adjust(self, charge: Charge, tokens: int, nano_usd: int) -> None:
        self._add(f"tpm:{charge.key_id}:{charge.minute}", tokens, 120)
        self._add(f"usd:{charge.key_id}:{charge.period}", nano_usd, charge.period_ttl_s)

    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        return self._get(f"usd:{key_id}:{period}")

    # --- response cache --------------------------------------------------------------------

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        entry = self._cache.get(key)
        if entry is None or entry[0] <= time.monotonic():
            self._cache.pop(key, None)
            return None
        return entry[1]

    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        self._cache[key] = (time.monotonic() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cache_entries:
            self._cache.popitem(last=False)

    async def cache_index(
        self, namespace: str, key: str, vector: bytes, ttl_s: float, max_entries: int
    ) -> None:
        entries = self._index.pop(namespace, None) or deque(maxlen=max_entries)
        entries.appendleft((key, vector, time.monotonic() + ttl_s))
        self._index[namespace] = entries  # newest last: the oldest namespace goes first
        while len(self._index) > self.max_cache_entries:
            del self._index[next(iter(self._index))]

    async def cache_candidates(self, namespace: str) -> list[tuple[str, bytes]]:
        now = time.monotonic()
        return [(k, v) for k, v, expires in self._index.get(namespace, ()) if expires > now]
