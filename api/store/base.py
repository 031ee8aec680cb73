"""The store interface: what the gateway remembers about the requests it served.

One interface, several backends (`memory` in-process for the embedded default; Redis shared by
replicas). The API layer owns the store; `router/` and `experts/` never import it.

Example::

    store = MemoryStore(max_requests=10_000)
    await store.log_request(record)
    recent = await store.requests(since=time.time() - 3600)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FeedbackRecord", "RequestRecord", "Store"]


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
        """More than one expert was tried before one answered (or all failed)."""
        return len(self.tried) > 1

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

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


class Store(ABC):
    """Request log and feedback. Implementations are async and safe to share across requests."""

    @abstractmethod
    async def log_request(self, record: RequestRecord) -> None:
        """Append `record` to the request log (bounded: the oldest records go first)."""

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

    async def aclose(self) -> None:  # noqa: B027 (optional hook: most stores hold nothing)
        """Release connections; the in-process store has none."""
