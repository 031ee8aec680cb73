"""The response cache (opt-in, `COE_CACHE=exact|semantic`): answer repeated questions for free.

Only deterministic requests are cached: temperature 0 (or any temperature with
`COE_CACHE_ANY_TEMPERATURE`), one choice, not streamed. Two lookups, in this order:

- exact: the SHA-256 of the normalised request (model, messages, every sampling parameter and
  `coe` option; not `stream`), so only the same request hits;
- semantic (`COE_CACHE=semantic`): the last user message is embedded and compared with the ones
  cached for the same routed expert, the same sampling parameters and the same earlier messages;
  a cosine similarity of at least `COE_CACHE_SIMILARITY` is a hit.

Entries live `COE_CACHE_TTL_S` in the store (Redis when configured: shared by replicas).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.embedding import BatchingEmbedder
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.store import Store

__all__ = ["CacheHit", "ResponseCache"]

Json = dict[str, Any]


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _last_user(request: ChatCompletionRequest) -> tuple[int, str] | None:
    for i in range(len(request.messages) - 1, -1, -1):
        message = request.messages[i]
        if message.role == "user" and isinstance(message.content, str):
            return i, message.content
    return None


@dataclass(frozen=True)
class CacheHit:
    kind: str  # "exact" | "semantic"
    entry: Json  # {"answer": the OpenAI body, "coe": the `coe` object it was answered with}
    similarity: float = 1.0


class ResponseCache:
    def __init__(
        self, store: Store, settings: Settings, embedder: BatchingEmbedder | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.embedder = embedder

    @property
    def semantic(self) -> bool:
        return self.settings.cache == "semantic"

    def cacheable(self, request: ChatCompletionRequest) -> bool:
        deterministic = request.temperature == 0 or self.settings.cache_any_temperature
        return deterministic and not request.stream and (request.n or 1) == 1

    def scope(self, key_id: str | None) -> str | None:
        """Whose answers a key may be served: its own, unless `COE_CACHE_SHARED` shares them
        among every key (one key's answers may hold what another must not read)."""
        return None if self.settings.cache_shared else key_id

    @staticmethod
    def exact_key(request: ChatCompletionRequest, scope: str | None = None) -> str:
        body = request.model_dump(exclude={"stream", "stream_options"}, exclude_none=True)
        return _digest(body if scope is None else {"scope": scope, "request": body})

    @staticmethod
    def _namespace(
        request: ChatCompletionRequest, expert: str, turn: int, scope: str | None = None
    ) -> str:
        """Same expert, same sampling, same conversation before the last user turn."""
        body = request.model_dump(
            exclude={"stream", "stream_options", "model", "coe", "messages"}, exclude_none=True
        )
        context = [m.model_dump(exclude_none=True) for m in request.messages[:turn]]
        names = {"expert": expert, "sampling": body, "context": context}
        return _digest(names if scope is None else {**names, "scope": scope})

    async def _vector(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        vector = np.asarray(await self.embedder.embed_one(text), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    async def lookup(
        self, request: ChatCompletionRequest, routed: str | None, scope: str | None = None
    ) -> CacheHit | None:
        """A cached answer for `request`, which the router would send to `routed`, among the
        answers of `scope` (`scope(key_id)`)."""
        entry = await self.store.cache_get(self.exact_key(request, scope))
        if entry is not None:
            return CacheHit("exact", entry)
        last = _last_user(request)
        if not self.semantic or self.embedder is None or routed is None or last is None:
            return None
        namespace = self._namespace(request, routed, last[0], scope)
        candidates = await self.store.cache_candidates(namespace)
        if not candidates:
            return None
        query = await self._vector(last[1])
        vectors = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in candidates])
        similarity = vectors @ query
        best = int(np.argmax(similarity))
        if similarity[best] < self.settings.cache_similarity:
            return None
        entry = await self.store.cache_get(candidates[best][0])
        return CacheHit("semantic", entry, float(similarity[best])) if entry else None

    async def save(
        self, request: ChatCompletionRequest, answer: Json, scope: str | None = None
    ) -> None:
        """Cache an answer (the OpenAI body with its `coe` object) for this request, in
        `scope`."""
        key = self.exact_key(request, scope)
        ttl = self.settings.cache_ttl_s
        coe = answer.get("coe") or {}
        entry = {"answer": {k: v for k, v in answer.items() if k not in ("id", "coe")}, "coe": coe}
        await self.store.cache_put(key, entry, ttl)
        last = _last_user(request)
        experts = coe.get("experts") or []
        if self.semantic and self.embedder is not None and last is not None and experts:
            vector = await self._vector(last[1])
            namespace = self._namespace(request, experts[0], last[0], scope)
            await self.store.cache_index(
                namespace, key, vector.tobytes(), ttl, self.settings.cache_max_entries
            )
