"""The store interface: what the gateway remembers about the requests it served.

One interface, several backends (`memory` in-process for the embedded default; `redis` shared by
replicas; `fallback` serving from memory while Redis is away). The API layer owns the store;
`router/` and `experts/` never import it. Besides the request log and feedback it holds API keys
(hashed), the counters behind rate limits and budgets, and the response cache: each of those
needs to be shared by replicas, so each is a few primitives here that a backend makes atomic.

Example::

    store = MemoryStore(max_requests=10_000)
    await store.log_request(record)
    recent = await store.requests(since=time.time() - 3600)
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Adjustment",
    "ApiKey",
    "CachePuts",
    "Charge",
    "FeedbackRecord",
    "RequestRecord",
    "Store",
    "StoreUnavailable",
]


class StoreUnavailable(Exception):
    """The backend cannot be reached (Redis down, timed out): callers fall back, never fail."""


@dataclass
class RequestRecord:
    """One served (or failed) chat request. Field names are an interface: extend, never rename.

    `ts` is the Unix time the request arrived; `status` the HTTP status the client got (200 for a
    stream that started, even if the expert failed mid-answer: `error` then says so). Prompts and
    answers are recorded only when a setting asks for it.
    """

    ts: float
    request_id: str
    model: str
    status: int
    latency_ms: float
    stream: bool = False
    experts: list[str] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    #: The tried experts whose call failed (an error or a timeout), in order.
    failed: list[str] = field(default_factory=list)
    router: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    ttft_ms: float | None = None
    key_id: str | None = None
    cache_hit: bool = False
    error: str | None = None
    prompt: str | None = None
    answer: str | None = None

    @property
    def fallback(self) -> bool:
        """An expert failed and another was tried (a composition calling several experts that
        all answered is not a fallback)."""
        return bool(self.failed) and len(self.tried) > 1

    def as_json(self) -> dict[str, Any]:
        """Every field; its lists and dict are copies (the shallow copy `asdict` would make,
        without its recursion: this runs once per logged request)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("experts", "tried", "failed"):
            data[name] = list(data[name])
        data["scores"] = dict(data["scores"])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class FeedbackRecord:
    """A client's judgement of a served request (`POST /v1/feedback`): `score` in [0, 1]."""

    ts: float
    request_id: str
    score: float
    key_id: str | None = None
    comment: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeedbackRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class ApiKey:
    """A client's API key as stored: its SHA-256 and a short prefix, never the key itself.

    `id` goes into `RequestRecord.key_id`. Limits left `None` are not enforced; `budget_usd`
    applies per calendar `period` ("day" or "month", UTC). Field names are an interface.
    """

    id: str
    name: str
    hash: str
    prefix: str
    created: float
    admin: bool = False
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    period: str = "day"
    revoked: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Charge:
    """What one request takes from a key's limits, in the windows it arrived in.

    Costs are integer nano-USD so that reservations add up exactly (ten reservations of a tenth
    of a budget fill it, never 1e-17 more). `minute` and `period` name the windows; the same
    charge is given back to `Store.adjust` to settle, so the windows never drift.
    """

    key_id: str
    minute: str
    period: str
    period_ttl_s: int
    tokens: int
    nano_usd: int


#: A settled difference for `Store.adjust`: the charge, then the tokens and nano-USD to add.
Adjustment = tuple[Charge, int, int]
#: Cache entries written together: key -> (value, ttl_s).
CachePuts = dict[str, tuple[dict[str, Any], float]]


class Store(ABC):
    """Request log, feedback, keys, limit counters and the response cache.

    Implementations are async and safe to share across requests; the Redis one is safe to share
    across gateway replicas, and raises `StoreUnavailable` when Redis cannot be reached.
    """

    @abstractmethod
    async def log_request(self, record: RequestRecord) -> None:
        """Append `record` to the request log (bounded: the oldest records go first)."""

    async def log_requests(self, records: list[RequestRecord]) -> None:
        """Append `records` in order; backends with round trips write them in one."""
        for record in records:
            await self.log_request(record)

    @abstractmethod
    async def requests(self, since: float = 0.0, limit: int = 10_000) -> list[RequestRecord]:
        """Logged requests with `ts >= since`, in the order logged (a request is logged when it
        ends), at most the last `limit`."""

    @abstractmethod
    async def get_request(self, request_id: str) -> RequestRecord | None:
        """The logged request with this id, or None when unknown or already evicted."""

    @abstractmethod
    async def add_feedback(self, record: FeedbackRecord) -> None:
        """Record a client's feedback on a request."""

    @abstractmethod
    async def feedback(self, since: float = 0.0, limit: int = 10_000) -> list[FeedbackRecord]:
        """Feedback with `ts >= since`, in the order received, at most the last `limit`."""

    # --- API keys -------------------------------------------------------------------------

    @abstractmethod
    async def add_key(self, key: ApiKey) -> None:
        """Store a new key; `ValueError` when an active key already has its name."""

    @abstractmethod
    async def lookup_key(self, key_hash: str | None) -> tuple[bool, ApiKey | None]:
        """Whether any active key exists, and the active key with this hash (one round trip:
        it runs on every request)."""

    @abstractmethod
    async def keys(self) -> list[ApiKey]:
        """Every key, active and revoked, oldest first."""

    @abstractmethod
    async def revoke_key(self, name: str) -> ApiKey | None:
        """Revoke the active key with this name; None when there is none."""

    # --- rate limits and budgets -----------------------------------------------------------

    @abstractmethod
    async def admit(
        self, charge: Charge, rpm: int | None, tpm: int | None, budget_nano_usd: int | None
    ) -> str | None:
        """Atomically check the key's windows and, if every limit allows it, take `charge`.

        Returns None when admitted, else which limit refused: "rpm", "tpm" or "budget" (and
        nothing is taken). A request larger than the whole TPM is admitted into an empty minute,
        or it could never run.
        """

    @abstractmethod
    async def adjust(self, charge: Charge, tokens: int, nano_usd: int) -> None:
        """Add `tokens` and `nano_usd` (negative to give back) to the windows of `charge`."""

    async def log_and_adjust(
        self,
        records: list[RequestRecord],
        adjustments: list[Adjustment],
        puts: CachePuts | None = None,
    ) -> None:
        """`log_requests(records)`, then `adjust` each of `adjustments` in order, then
        `cache_put` each of `puts` (`key: (value, ttl_s)`); backends with round trips do all in
        one (the request log's flusher settles budgets and writes cache entries this way)."""
        if records:
            await self.log_requests(records)
        for charge, tokens, nano_usd in adjustments:
            await self.adjust(charge, tokens, nano_usd)
        for key, (value, ttl_s) in (puts or {}).items():
            try:
                await self.cache_put(key, value, ttl_s)
            except Exception as exc:  # a cache may miss; raising would log the records twice
                logging.getLogger("coe.store").warning("cache: %s not written (%s)", key, exc)

    @abstractmethod
    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        """What the key has spent (and holds reserved) in `period`."""

    async def add_counters(self, counters: list[tuple[str, int, float]]) -> None:
        """Add `(window name, amount, seconds left)` to the limit windows (a replica's outage
        counts, written back when the shared store returns)."""
        raise NotImplementedError(f"{type(self).__name__} cannot take counters")

    # --- response cache --------------------------------------------------------------------

    @abstractmethod
    async def cache_get(self, key: str) -> dict[str, Any] | None:
        """The cached answer under `key`, or None when absent or expired."""

    @abstractmethod
    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        """Cache `value` under `key` for `ttl_s` seconds."""

    @abstractmethod
    async def cache_index(
        self, namespace: str, key: str, vector: bytes, ttl_s: float, max_entries: int
    ) -> None:
        """Remember that `key` answers a query embedded as `vector` (float32 bytes), keeping the
        newest `max_entries` per namespace."""

    @abstractmethod
    async def cache_candidates(self, namespace: str) -> list[tuple[str, bytes]]:
        """The (key, vector) pairs indexed in `namespace`, newest first."""

    async def ping(self) -> None:  # noqa: B027  (optional: only remote backends can fail)
        """Raise `StoreUnavailable` when the backend cannot answer; in-process always can."""

    def status(self) -> dict[str, Any]:
        """What `GET /ready` says about the store: which backend serves, and whether it is the
        one configured."""
        return {"backend": type(self).__name__.removesuffix("Store").lower(), "status": "ok"}

    async def aclose(self) -> None:
        """Release connections; the in-process store has none."""
        return None
