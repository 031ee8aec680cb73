"""What a response says about itself (`CoeMeta`: the `coe` object and the `x-coe-*` headers)
and the request log's entry made from it. Every executor (one expert, a cascade, a composition)
fills a `CoeMeta`; the settle step logs it. Nothing here calls anything."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

from api.schemas import ChatCompletionRequest
from api.store import RequestRecord
from experts.fallback import Attempt

__all__ = ["CoeMeta", "Json", "OnEnd", "answer_text", "new_request_id", "request_record"]

Json = dict[str, Any]

#: Called with a request's log record once it is logged (settles budgets, feeds metrics).
OnEnd = Callable[[RequestRecord], Awaitable[None]]


#: The bits a version-4 UUID fixes (RFC 4122: version 4, variant 10), as `uuid.UUID` sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id(prefix: str = "chatcmpl") -> str:
    """`prefix-` and a random version-4 UUID's 32 hex digits: the same value as
    `f"{prefix}-{uuid.uuid4().hex}"`, without building a `uuid.UUID` (its checks were a
    couple of per cent of a request's CPU)."""
    bits = int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET
    return f"{prefix}-{bits:032x}"


@dataclass
class CoeMeta:
    """The `coe` object of a response. Field names are an interface: extend, never rename."""

    router: str | None
    scores: dict[str, float]
    experts: list[str]
    tried: list[Attempt]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    cache_hit: bool = False
    #: A cascade's calls, in order: `{expert, cost_usd, predicted_quality}` each.
    steps: list[Json] = field(default_factory=list)
    #: A learning router's episode (not sent): what feedback on this request updates.
    trace: Any = None
    #: coe-compose only: strategy, every sub-answer with its cost, failures (`api.compose`).
    compose: Json | None = None
    #: coe-auto in a conversation: its earlier expert and whether this turn stayed (`api.sticky`).
    sticky: Json | None = None

    def as_json(self) -> Json:
        meta: Json = {
            "experts": self.experts,
            "tried": [a.as_json() for a in self.tried],
            "router": self.router,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "estimated": self.usage_estimated,
            },
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 2),
            "cache_hit": self.cache_hit,
        }
        if self.steps:
            meta["steps"] = self.steps
        if self.compose is not None:
            meta["compose"] = self.compose
        if self.sticky is not None:
            meta["sticky"] = self.sticky
        return meta

    def headers(self, final: bool = True) -> dict[str, str]:
        headers = {
            "x-coe-experts": ",".join(self.experts),
            "x-coe-tried": ",".join(a.expert for a in self.tried),
            "x-coe-router": self.router or "",
            "x-coe-scores": _scores_json(self.scores),
        }
        if final:
            headers |= {
                "x-coe-cost-usd": f"{self.cost_usd:.10f}",
                "x-coe-latency-ms": f"{self.latency_ms:.1f}",
                "x-coe-prompt-tokens": str(self.prompt_tokens),
                "x-coe-completion-tokens": str(self.completion_tokens),
            }
        return headers


def _scores_json(scores: dict[str, float]) -> str:
    """`json.dumps({k: round(v, 4) ...})`, the same text, written directly for the usual str
    names and finite floats (`json.dumps` builds an encoder per call: 3 µs of a request)."""
    parts = []
    for name, value in scores.items():
        rounded = round(value, 4)
        if type(name) is not str or type(rounded) is not float or not math.isfinite(rounded):
            return json.dumps({k: round(v, 4) for k, v in scores.items()})
        parts.append(f"{encode_basestring_ascii(name)}: {float.__repr__(rounded)}")
    return "{" + ", ".join(parts) + "}"


def answer_text(answer: Json) -> str:
    """The text of every choice of a `chat.completion`, joined."""
    return "".join(
        str((c.get("message") or {}).get("content") or "") for c in answer.get("choices", [])
    )


def request_record(
    request: ChatCompletionRequest,
    request_id: str,
    arrived: float,
    meta: CoeMeta | None,
    status: int,
    error: str | None = None,
) -> RequestRecord:
    """The request log's entry for a request that ended with `status` (and `meta`, if routed)."""
    record = RequestRecord(
        ts=arrived,
        request_id=request_id,
        model=request.model,
        status=status,
        latency_ms=meta.latency_ms if meta else (time.time() - arrived) * 1000,
        stream=request.stream,
        error=error,
    )
    if meta is not None:
        record.experts = list(meta.experts)
        record.tried = [a.expert for a in meta.tried]
        record.failed = [a.expert for a in meta.tried if a.error is not None]
        record.router = meta.router
        record.scores = dict(meta.scores)
        record.prompt_tokens = meta.prompt_tokens
        record.completion_tokens = meta.completion_tokens
        record.usage_estimated = meta.usage_estimated
        record.cost_usd = meta.cost_usd
        record.ttft_ms = meta.ttft_ms
    return record
