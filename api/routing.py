"""The routing step of a request: embed the query, score the experts, and rank them.

This is where the router (which sees descriptors only) meets the live pool (health): the gateway
passes the experts that are down as `unavailable`, and the policy ranks them last.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import router.baselines  # noqa: F401  (registers the baseline routers)
from api.capabilities import Needs, needs, unfit
from api.embedding import BatchingEmbedder, ScoreBatcher
from api.errors import InvalidRequest
from api.schemas import ChatCompletionRequest
from experts.tracing import span
from router.base import ROUTERS, Router
from router.descriptor import ExpertDescriptor
from router.load import LoadBoard
from router.policy import Policy
from router.query import estimate_tokens, routing_text

__all__ = ["RouteDecision", "RoutingService", "build_routers"]

#: What a router that reads no embedding is given for one query (shared: read-only).
_NO_EMBEDDINGS = np.zeros((1, 0), dtype=np.float32)
_NO_EMBEDDINGS.flags.writeable = False


@dataclass(frozen=True)
class RouteDecision:
    """What the router decided for one request, reported to the client under `coe`."""

    router: str
    ranked: list[str]
    scores: dict[str, float]
    estimated_cost_usd: dict[str, float]
    utility: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    rerouted_from: str | None = None  # the load moved the call away from this expert
    #: The query's embedding, when the router used one (a cascade's policy reads it again).
    embedding: np.ndarray | None = None
    #: The conversation's earlier expert, and whether this turn stayed with it (`api.sticky`).
    sticky: dict[str, Any] | None = None

    def trace_attributes(self) -> dict[str, Any]:
        """What the routing span records: the router, its choice and why."""
        chosen = self.ranked[0] if self.ranked else None
        return {
            "router": self.router,
            "expert": chosen,
            "predicted_quality": self.scores.get(chosen) if chosen else None,
            "estimated_cost_usd": self.estimated_cost_usd.get(chosen) if chosen else None,
            "ranked": ",".join(self.ranked),
            "rerouted_from": self.rerouted_from,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "chosen": self.ranked[0] if self.ranked else None,
            "ranked": self.ranked,
            "rerouted_from": self.rerouted_from,
            "sticky": self.sticky,
            "experts": [
                {
                    "name": name,
                    "predicted_quality": round(self.scores[name], 6),
                    "estimated_cost_usd": self.estimated_cost_usd[name],
                    "utility": round(self.utility.get(name, 0.0), 6),
                    "available": name not in self.unavailable,
                    "excluded": self.excluded.get(name),
                }
                for name in self.scores
            ],
        }


class RoutingService:
    """Ranks the pool's experts for a chat request.

    `routers` holds every router a request may name (`"coe": {"router": ...}`); `default` is the
    one `coe-auto` uses. Embedding runs in a worker thread so it never blocks the event loop.
    """

    def __init__(
        self,
        experts: Sequence[ExpertDescriptor],
        routers: Mapping[str, Router],
        default: str,
        policy: Policy,
        embedder: BatchingEmbedder | None,
        expected_completion_tokens: int,
        load_board: LoadBoard | None = None,
        embedder_name: str | None = None,
    ) -> None:
        """`load_board`: the pool's live load, which makes routing load-aware (the policy's
        `load_tolerance` bounds what it may give up). `embedder_name`: the `EMBEDDERS` name
        queries are embedded with (`COE_EMBEDDER` resolved against the artifact's record)."""
        self.experts = {e.name: e for e in experts}
        self.routers = dict(routers)
        self.default = default
        self.policy = policy
        self.embedder = embedder
        self.embedder_name = embedder_name
        self.expected_completion_tokens = expected_completion_tokens
        self.load_board = load_board
        self.scores = ScoreBatcher()
        self._unfit: dict[Needs, dict[str, str]] = {}
        self._replies: OrderedDict[tuple[object, bytes], dict[str, float]] = OrderedDict()
        #: per cost scale, for `_policies_of` (keyed by the scale alone: hashing the policy,
        #: a dataclass, on every request cost more than the lookup)
        self._policies: dict[float | None, Policy] = {}
        self._policies_of = policy

    def unfit(self, need: Needs) -> dict[str, str]:
        """The experts that lack what `need` asks for, and why (a copy: callers may change it).

        Remembered per `need` (a few hundred kinds: most requests are text of a similar size), since
        the experts' capabilities are fixed for the service's life; checking each expert on every
        request was a tenth of a cache hit's routing time."""
        known = self._unfit.get(need)
        if known is None:
            known = {}
            for name, expert in self.experts.items():
                reason = unfit(expert, need)
                if reason is not None:
                    known[name] = reason
            if len(self._unfit) >= 1024:  # bounded: prompt sizes vary without end
                self._unfit.clear()
            self._unfit[need] = known
        return dict(known)

    def router_names(self) -> list[str]:
        return sorted(self.routers)

    def _router(self, name: str | None) -> Router:
        name = name or self.default
        if name not in self.routers:
            raise InvalidRequest(
                f"unknown router {name!r}; this gateway has: {', '.join(self.router_names())}",
                param="coe.router",
            )
        return self.routers[name]

    def estimated_costs(
        self,
        messages: Sequence[Mapping[str, Any]],
        completion_limit: int | None,
        reply_tokens: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """USD per expert before calling it: the prompt's estimated tokens plus a reply of
        `reply_tokens[name]` (a trained router's prediction) or `expected_completion_tokens`,
        capped by the request's completion limit."""
        prompt = estimate_tokens(messages)
        default = min(
            completion_limit or self.expected_completion_tokens, self.expected_completion_tokens
        )
        cap = float(completion_limit) if completion_limit else float("inf")
        predicted = reply_tokens or {}
        return {
            n: e.cost_usd(prompt, min(predicted[n], cap) if n in predicted else default)
            for n, e in self.experts.items()
        }

    @staticmethod
    def predicted_reply_tokens(router: Router, vector: np.ndarray | None) -> dict[str, float]:
        """Each expert's reply length as `router` predicts it for this query (learned from its
        training data, `router.costs`); empty for a router without a cost model."""
        if router.cost_model_ is None or vector is None:
            return {}
        tokens = router.cost_model_.reply_tokens(vector[None, :], 1)[0]
        return {m: float(t) for m, t in zip(router.models_, tokens, strict=False) if t > 0}

    def _reply_tokens(self, router: Router, vector: np.ndarray | None) -> dict[str, float]:
        """`predicted_reply_tokens`, remembered per cost model and vector (LRU, as the scores
        are: a question asked again is a cache hit, and the prediction was a tenth of a hit's
        routing CPU). Keyed by the cost model object: onboarding replaces it, never edits it.
        The dict returned is shared: read it only."""
        model = router.cost_model_
        if model is None or vector is None:
            return {}
        key = (model, vector.tobytes())
        known = self._replies.get(key)
        if known is None:
            known = self._replies[key] = self.predicted_reply_tokens(router, vector)
            while len(self._replies) > self.scores.cache_size:
                self._replies.popitem(last=False)
        else:
            self._replies.move_to_end(key)
        return known

    def _policy(self, cost_scale: float | None) -> Policy:
        """The service's policy at a router's cost scale (built once per scale)."""
        if self._policies_of is not self.policy:  # the service's policy was replaced
            self._policies, self._policies_of = {}, self.policy
        policy = self._policies.get(cost_scale)
        if policy is None:
            if len(self._policies) >= 64:  # bounded: one entry per trained router in practice
                self._policies.clear()
            policy = self._policies[cost_scale] = replace(self.policy, cost_scale=cost_scale)
        return policy

    async def route(
        self, request: ChatCompletionRequest, unavailable: set[str] | None = None
    ) -> RouteDecision:
        """The decision for a chat request under its `coe` options; a 400 naming
        `coe.max_cost_usd` when no expert fits the request's limits."""
        options = request.coe
        messages = request.role_and_content()
        with span("coe.routing") as traced:
            decision = await self.decide(
                messages,
                router=options.router if options else None,
                cost_weight=options.cost_weight if options else None,
                max_cost_usd=options.max_cost_usd if options else None,
                completion_limit=request.completion_limit,
                unavailable=unavailable,
                need=(need := needs(request, messages)),
            )
            if traced.recording:  # built only for a real span: every request routes
                traced.set(**decision.trace_attributes())
        if not decision.ranked:
            lacking = any(n in self.unfit(need) for n in decision.excluded)
            raise InvalidRequest(
                "no expert fits this request's limits: "
                + "; ".join(f"{k}: {v}" for k, v in decision.excluded.items()),
                param=need.param if lacking else "coe.max_cost_usd",
            )
        return decision

    async def decide(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        router: str | None = None,
        cost_weight: float | None = None,
        max_cost_usd: float | None = None,
        completion_limit: int | None = None,
        unavailable: set[str] | None = None,
        need: Needs | None = None,
    ) -> RouteDecision:
        """`need`: what the request needs (tools, modalities, context); experts lacking it are
        never ranked, and `excluded` says why."""
        chosen = self._router(router)
        text = routing_text(messages)
        if chosen.uses_embeddings:
            if self.embedder is None:
                raise InvalidRequest(
                    f"router {chosen.name!r} needs the embedder, which is not loaded"
                )
            with span("coe.embedding", chars=len(text)):
                vector = await self.embedder.embed_one(text)
            quality = await self.scores.score(chosen, vector, text)
        else:
            vector = None
            quality = chosen.score(_NO_EMBEDDINGS, [text])[0]
        models = list(chosen.models_)
        costs = self.estimated_costs(messages, completion_limit, self._reply_tokens(chosen, vector))
        qualities: list[float] = np.asarray(quality, dtype=float).tolist()
        down = unavailable or set()
        # A trained router records the cost scale its curve was swept with (`coe eval`,
        # `coe calibrate`), so a calibrated cost_weight means here what it meant there.
        policy = self._policy(chosen.cost_scale_)
        lacking = self.unfit(need) if need is not None else {}
        fit = [i for i, m in enumerate(models) if m not in lacking]
        decision = policy.decide(
            [models[i] for i in fit],
            [qualities[i] for i in fit],
            [costs[models[i]] for i in fit],
            cost_weight=cost_weight,
            max_cost_usd=max_cost_usd,
            unavailable=down,
            load=self.load_board.snapshot() if self.load_board is not None else None,
        )
        return RouteDecision(
            router=chosen.name,
            ranked=decision.ranked,
            scores=dict(zip(models, qualities, strict=True)),
            estimated_cost_usd={m: costs[m] for m in models},
            utility=decision.utility,
            excluded={**decision.excluded, **lacking},
            unavailable=sorted(down & set(models)),
            rerouted_from=decision.rerouted_from,
            embedding=vector,
        )


def build_routers(
    experts: Sequence[ExpertDescriptor], artifact: Router | None
) -> dict[str, Router]:
    """Every baseline that needs no training, fitted to the pool, plus the trained artifact."""
    routers: dict[str, Router] = {}
    for name in ("cheapest", "random"):
        routers[name] = ROUTERS[name]().fit_pool(experts)
    if artifact is not None:
        artifact.check_pool(experts)
        routers[artifact.name] = artifact
    return routers
