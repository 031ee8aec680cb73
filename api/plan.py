"""The plan step: what a chat request will do, decided once, before any expert is called.

A `Plan` is a value: the request, its kind (`single`: one expert with fallback down the
ranking; `cascade`: a step-wise router's episode, cheap first; `compose`: k experts and an
aggregator), how many expert calls it may make, and, once routed, the one `RouteDecision`.
`Planner` makes it in two moves, both here so that nothing else ever routes:

    plan = planner.shape(request)   # no I/O: kind, max calls, worst case (what admission reserves)
    plan = await planner.route(plan)  # the request's only call to RoutingService.route

The split is what lets a rate-limited request cost nothing: the worst case is a bound over every
expert the request may reach, so it is known before routing, and admission refuses (429) before
the query is embedded. Every later step (the cache, the executors, the settle step) reads the
routed plan; none routes again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from api.capabilities import check_expert
from api.errors import ModelNotFound
from api.routing import RouteDecision, RoutingService
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.tokens import completion_tokens, token_limit
from experts.live import LivePool
from experts.pool import VIRTUAL_MODELS
from router.descriptor import ExpertDescriptor
from router.episodes import runs_episodes
from router.query import estimate_tokens, max_prompt_tokens

if TYPE_CHECKING:
    from api.sticky import Stickiness

__all__ = ["Kind", "Plan", "Planner", "compose_calls"]

Kind = Literal["single", "cascade", "compose"]


@dataclass(frozen=True)
class Pricing:
    """What a worst case is computed from: the pool's prices and the token defaults."""

    experts: Mapping[str, ExpertDescriptor]
    default_max_tokens: int  # COE_DEFAULT_MAX_TOKENS
    expected_completion_tokens: int  # what the router assumes a reply runs to (TPM)


@dataclass(frozen=True)
class Plan:
    """One request's plan. `decision` and `ranked` are set by `Planner.route` (`routed`)."""

    request: ChatCompletionRequest
    kind: Kind
    #: The most expert calls it may make: 1, a cascade's `max_calls`, or a composition's k·L+1.
    max_calls: int
    pricing: Pricing = field(repr=False)
    decision: RouteDecision | None = None  # None for an expert named directly
    ranked: list[str] = field(default_factory=list)  # the experts to try, best first
    routed: bool = False

    def worst_case(self) -> tuple[int, float]:
        """Tokens (for TPM: the prompt and the completion the router assumes) and the most USD
        this plan can cost, before any expert is called.

        A bound, not a guess: every call at the `max_tokens` it is sent with (`api.tokens`), its
        prompt at one token a UTF-8 byte, at the dearest expert it may reach, `max_calls` times
        (a composition's later prompts also hold the answers they read), never past
        `coe.max_cost_usd`."""
        request, pricing = self.request, self.pricing
        messages = request.role_and_content()  # what the token bounds read
        cap = request.coe.max_cost_usd if request.coe else None
        experts = pricing.experts
        reachable = [experts[request.model]] if request.model in experts else experts.values()
        limits = {
            e.name: token_limit(e, request.completion_limit, pricing.default_max_tokens)
            for e in reachable
        }
        limit = max(limits.values(), default=pricing.default_max_tokens)
        calls = self.max_calls
        prompt = max_prompt_tokens(messages)
        if self.kind == "compose":  # later calls read the earlier answers
            prompt += (calls - 1) * (limit + 16)
        worst = max(
            (
                e.cost_usd(prompt, completion_tokens(e, limits[e.name], prompt, cap))
                for e in reachable
            ),
            default=0.0,
        )
        usd = calls * worst
        if cap is not None:  # the composition itself never spends past it
            usd = min(usd, cap)
        completion = min(limit, pricing.expected_completion_tokens)
        return calls * (estimate_tokens(messages) + completion), usd


def compose_calls(request: ChatCompletionRequest, settings: Settings) -> int:
    """The most expert calls a composition of `request` can make: k proposers per layer (L
    layers for moa), plus the aggregator or judge (vote has none)."""
    options = request.coe
    strategy = (options.strategy if options else None) or settings.compose_strategy
    k = (options.k if options else None) or settings.compose_k
    layers = (options.layers if options else None) or settings.compose_layers
    proposals = k * (layers if strategy == "moa" else 1)
    return proposals + (0 if strategy == "vote" else 1)


class Planner:
    """Makes every request's plan; the only caller of `RoutingService.route` on the chat path.

    `cascades`: whether a step-wise router's requests run as cascades (the app serves them when
    a router that runs episodes, `router.episodes.runs_episodes`, is loaded). `sticky`: coe-auto
    conversations stay with their expert.
    """

    def __init__(
        self,
        pool: LivePool,
        routing: RoutingService,
        settings: Settings,
        sticky: Stickiness | None = None,
        cascades: bool = False,
    ) -> None:
        self.pool = pool
        self.routing = routing
        self.settings = settings
        self.sticky = sticky
        self.cascades = cascades
        self.pricing = Pricing(
            routing.experts, settings.default_max_tokens, routing.expected_completion_tokens
        )

    def model_names(self) -> list[str]:
        return [*self.pool.names, *VIRTUAL_MODELS]

    def _steps(self, router_name: str | None) -> int:
        """How many calls the named router's episode may make; 0 when it is not step-wise."""
        router = self.routing.routers.get(router_name or self.routing.default)
        return router.max_calls if self.cascades and runs_episodes(router) else 0

    def shape(self, request: ChatCompletionRequest) -> Plan:
        """The plan before routing: its kind and worst case, from the request and the pool
        alone (no I/O, never raises: an unknown model is refused by `route`, after admission,
        so that it is logged and counted like any other request)."""
        if request.model == "coe-compose":
            return Plan(request, "compose", compose_calls(request, self.settings), self.pricing)
        if request.model == "coe-auto":
            steps = self._steps(request.coe.router if request.coe else None)
            if steps:
                return Plan(request, "cascade", steps, self.pricing)
        return Plan(request, "single", 1, self.pricing)

    async def route(self, plan: Plan) -> Plan:
        """`plan` routed: the experts to try and the decision. An expert named directly is
        checked against what the request needs (400) and not routed; an unknown model is a 404;
        a cascade whose router used no embedding runs as a single call."""
        request = plan.request
        if request.model in self.pool.engines:
            check_expert(self.routing.experts[request.model], request)
            ranked = [request.model]
            return Plan(request, plan.kind, plan.max_calls, plan.pricing, None, ranked, True)
        if request.model not in VIRTUAL_MODELS:
            raise ModelNotFound(
                f"model {request.model!r} does not exist; valid models: "
                f"{', '.join(self.model_names())}",
                param="model",
            )
        decision = await self.routing.route(request, self.pool.health.down())
        kind = plan.kind
        if kind != "compose":
            if self.sticky is not None:
                decision = await self.sticky.apply(request, decision)
            router = self.routing.routers.get(decision.router)
            # a router that reads no embedding (an agreement chain) still runs its episodes
            embedded = decision.embedding is not None or (
                router is not None and not router.uses_embeddings
            )
            stepwise = embedded and self._steps(decision.router) > 0
            kind = "cascade" if stepwise else "single"
        # the constructor, not `dataclasses.replace`, which inspects every field per call
        return Plan(request, kind, plan.max_calls, plan.pricing, decision, decision.ranked, True)

    async def plan(self, request: ChatCompletionRequest) -> Plan:
        """`route(shape(request))`: for callers with no admission in between (`/v1/route`)."""
        return await self.route(self.shape(request))
