"""Per-key rate limits (requests and tokens per minute) and USD budgets (per day or month, UTC).

Before a request is sent, `Limiter.admit` takes one request, its estimated tokens and its
estimated cost from the key's windows in one atomic store call (a Lua script on Redis), or
refuses with 429 and `retry-after`. After it ends, `Limiter.settle` replaces the estimates by
what the request really used, so a budget is charged the real cost. The estimate is the most the
request could cost: the dearest expert it may reach, at the completion length the router assumes
(`COE_EXPECTED_COMPLETION_TOKENS`, or the request's limit when lower). Concurrent requests
therefore cannot overrun a budget by more than the estimates undershoot the truth.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable

from api.errors import BudgetExceeded, RateLimited
from api.routing import RoutingService
from api.schemas import ChatCompletionRequest
from api.store import ApiKey, Charge, RequestRecord, Store
from router.query import estimate_tokens

__all__ = ["Limiter", "nano_usd", "period_window"]

_DAY = 86_400


def nano_usd(usd: float) -> int:
    return round(usd * 1e9)


def period_window(period: str, now: float) -> tuple[str, int, float]:
    """The budget period's id, how long its counter is kept, and seconds until the next one."""
    t = time.gmtime(now)
    if period == "month":
        days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        return time.strftime("%Y-%m", t), 62 * _DAY, start + days * _DAY - now
    start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    return time.strftime("%Y-%m-%d", t), 2 * _DAY, start + _DAY - now


class Limiter:
    def __init__(
        self,
        store: Store,
        routing: RoutingService,
        max_calls: Callable[[ChatCompletionRequest], int] | None = None,
    ) -> None:
        self.store = store
        self.routing = routing
        #: How many expert calls a request may make (a composition, a cascade): the reservation
        #: covers all of them.
        self.max_calls = max_calls

    def estimate(self, request: ChatCompletionRequest) -> tuple[int, float]:
        """Tokens and the most USD this request may cost, before any expert is called."""
        messages = [m.model_dump() for m in request.messages]
        costs = self.routing.estimated_costs(messages, request.completion_limit)
        if request.model in costs:
            reachable = [costs[request.model]]
        else:
            cap = request.coe.max_cost_usd if request.coe else None
            reachable = [c for c in costs.values() if cap is None or c <= cap] or [0.0]
        completion = min(
            request.completion_limit or self.routing.expected_completion_tokens,
            self.routing.expected_completion_tokens,
        )
        calls = 1
        if request.model not in costs and self.max_calls is not None:
            calls = self.max_calls(request)
        usd = calls * max(reachable)
        cap = request.coe.max_cost_usd if request.coe else None
        if cap is not None:  # the composition itself never spends past it
            usd = min(usd, cap)
        return calls * (estimate_tokens(messages) + completion), usd

    async def admit(
        self, key: ApiKey | None, request: ChatCompletionRequest, now: float | None = None
    ) -> Charge | None:
        """Take this request from the key's limits, or raise `RateLimited`/`BudgetExceeded`.

        None for an open gateway or a key without limits: nothing to count or settle.
        """
        if key is None or (key.rpm is None and key.tpm is None and key.budget_usd is None):
            return None
        now = time.time() if now is None else now
        tokens, usd = self.estimate(request)
        period, ttl_s, period_left_s = period_window(key.period, now)
        charge = Charge(
            key_id=key.id,
            minute=str(int(now // 60)),
            period=period,
            period_ttl_s=ttl_s,
            tokens=tokens,
            nano_usd=math.ceil(usd * 1e9),
        )
        budget = None if key.budget_usd is None else nano_usd(key.budget_usd)
        refused = await self.store.admit(charge, key.rpm, key.tpm, budget)
        minute_left_s = 60 - now % 60
        if refused == "rpm":
            raise RateLimited(
                f"key {key.name!r} is limited to {key.rpm} requests per minute", minute_left_s
            )
        if refused == "tpm":
            raise RateLimited(
                f"key {key.name!r} is limited to {key.tpm} tokens per minute; this request "
                f"needs about {tokens}",
                minute_left_s,
                "tpm",
            )
        if refused == "budget":
            spent = await self.store.spent_nano_usd(key.id, period) / 1e9
            raise BudgetExceeded(
                f"key {key.name!r} has spent ${spent:.6f} of its ${key.budget_usd} budget for "
                f"this {key.period} (UTC); this request may cost up to ${usd:.6f}",
                period_left_s,
            )
        return charge

    async def settle(self, charge: Charge | None, record: RequestRecord) -> None:
        """Replace the estimates `admit` took by what `record` says the request used."""
        if charge is None:
            return
        used_tokens = record.prompt_tokens + record.completion_tokens
        await self.store.adjust(
            charge, used_tokens - charge.tokens, nano_usd(record.cost_usd) - charge.nano_usd
        )
