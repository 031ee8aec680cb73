"""Conversations that stay put: `coe-auto` keeps answering a conversation with the expert that
answered its earlier turns, unless switching is predicted to gain more than `stickiness`.

Switching experts mid-conversation changes the voice the user hears and throws away the
expert's prefix cache (vLLM and llama.cpp reuse the KV cache of a prompt they have seen), so a
small predicted gain is not worth it. The gain is the router's: the policy's utility of its
first choice minus that of the expert that answered before (quality − λ·cost, the same scale
as `COE_LOAD_TOLERANCE`).

A conversation is recognised without any change to the client, by what it sends anyway:

- `metadata.conversation_id` (or `session_id`, `thread_id`) when sent: that id;
- else `user` when sent: the user and the conversation's first user message;
- else the conversation itself: a turn is remembered under the hash of its messages up to its
  last user message, and the next turn, which repeats them and adds the answer and a new user
  message, is looked up under the hash of its messages up to its second-to-last user message.
  Only the client's own copy of the conversation is hashed, so it matches however the client
  stores the answers.

The expert is kept in the store (Redis with `COE_STICKY_TTL_S` expiry, or memory), so every
replica sees it. The response's `coe.sticky` says what happened:
`{"previous", "router_choice", "stayed", "gain", "stickiness", "reason"}`: the earlier expert,
the router's own first choice for this turn, and the utility it would have gained.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from api.routing import RouteDecision
from api.schemas import ChatCompletionRequest
from api.store import Store
from experts.tracing import span

__all__ = ["Stickiness"]

Json = dict[str, Any]
_PREFIX = "sticky:"
_ID_FIELDS = ("conversation_id", "session_id", "thread_id")


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _messages(request: ChatCompletionRequest, end: int) -> list[Json]:
    return [{"role": m.role, "content": m.content, "name": m.name} for m in request.messages[:end]]


def _user_turns(request: ChatCompletionRequest) -> list[int]:
    return [i for i, m in enumerate(request.messages) if m.role == "user"]


def _named(request: ChatCompletionRequest) -> str | None:
    """The key of a conversation the client names (metadata id, or user + first message)."""
    extra = request.model_extra or {}
    metadata = extra.get("metadata")
    if isinstance(metadata, dict):
        for field in _ID_FIELDS:
            if isinstance(metadata.get(field), str) and metadata[field]:
                return "id:" + _digest([field, metadata[field]])
    user = extra.get("user")
    turns = _user_turns(request)
    if isinstance(user, str) and user and turns:
        return "user:" + _digest([user, _messages(request, turns[0] + 1)])
    return None


class Stickiness:
    """Looks up and remembers which expert answers each conversation."""

    def __init__(self, store: Store, stickiness: float, ttl_s: float) -> None:
        self.store = store
        self.stickiness = stickiness
        self.ttl_s = ttl_s

    @staticmethod
    def earlier_key(request: ChatCompletionRequest) -> str | None:
        """The key the conversation's previous turn was remembered under (None: no earlier
        turn, so nothing to stay with)."""
        named = _named(request)
        if named is not None:
            return named
        turns = _user_turns(request)
        if len(turns) < 2:
            return None
        return "chat:" + _digest(_messages(request, turns[-2] + 1))

    @staticmethod
    def this_key(request: ChatCompletionRequest) -> str | None:
        """The key the next turn of this conversation will look up."""
        named = _named(request)
        if named is not None:
            return named
        turns = _user_turns(request)
        return "chat:" + _digest(_messages(request, turns[-1] + 1)) if turns else None

    def threshold(self, request: ChatCompletionRequest) -> float:
        option = request.coe.stickiness if request.coe else None
        return self.stickiness if option is None else option

    async def apply(self, request: ChatCompletionRequest, decision: RouteDecision) -> RouteDecision:
        """`decision` with the conversation's earlier expert first when switching gains no more
        than the threshold; `decision.sticky` says what was decided and why."""
        key = self.earlier_key(request)
        if key is None or not decision.ranked:
            return decision
        with span("coe.sticky") as traced:
            entry = await self.store.cache_get(_PREFIX + key)
            previous = entry.get("expert") if entry else None
            if not isinstance(previous, str):
                return decision
            threshold = self.threshold(request)
            ranked, sticky = self._decide(decision, previous, threshold)
            traced.set(previous=previous, stayed=sticky["stayed"], gain=sticky.get("gain"))
        return replace(decision, ranked=ranked, sticky=sticky)

    @staticmethod
    def _decide(decision: RouteDecision, previous: str, threshold: float) -> tuple[list[str], Json]:
        best = decision.ranked[0]
        sticky: Json = {"previous": previous, "router_choice": best, "stickiness": threshold}
        if previous == best:
            return decision.ranked, sticky | {"stayed": True, "gain": 0.0,
                                              "reason": "the router chose it again"}  # fmt: skip
        if previous not in decision.ranked:
            why = decision.excluded.get(previous, "it is not in this pool's ranking")
            return decision.ranked, sticky | {"stayed": False, "reason": f"{previous}: {why}"}
        if previous in decision.unavailable:
            return decision.ranked, sticky | {"stayed": False, "reason": f"{previous} is down"}
        gain = decision.utility.get(best, 0.0) - decision.utility.get(previous, 0.0)
        sticky["gain"] = round(gain, 6)
        if gain > threshold:
            reason = f"switching to {best} gains {gain:.4f} > stickiness {threshold}"
            return decision.ranked, sticky | {"stayed": False, "reason": reason}
        reason = f"switching to {best} would gain only {gain:.4f} <= stickiness {threshold}"
        ranked = [previous, *(e for e in decision.ranked if e != previous)]
        return ranked, sticky | {"stayed": True, "reason": reason}

    async def remember(self, request: ChatCompletionRequest, expert: str) -> None:
        """`expert` answered this turn: the next turn of the conversation looks it up."""
        key = self.this_key(request)
        if key is not None:
            await self.store.cache_put(_PREFIX + key, {"expert": expert}, self.ttl_s)
