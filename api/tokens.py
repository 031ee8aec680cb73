"""The `max_tokens` each expert call is sent: the one rule that chat, cascades, compositions and
the budget reservation (`Plan.worst_case`) all follow, so that no call can cost more than was
reserved for it."""

from __future__ import annotations

import math

from router.descriptor import ExpertDescriptor

__all__ = ["completion_tokens", "token_limit"]


def token_limit(expert: ExpertDescriptor, requested: int | None, default: int) -> int:
    """The `max_tokens` a call to `expert` starts from: the request's, else the expert's
    `default_max_tokens` from the pool, else the gateway's `default` (`COE_DEFAULT_MAX_TOKENS`);
    `completion_tokens` then fits it to the context and the cost cap."""
    return requested or expert.default_max_tokens or default


def completion_tokens(
    expert: ExpertDescriptor, max_tokens: int, prompt_bound: int, max_cost_usd: float | None
) -> int:
    """The `max_tokens` to send `expert`: the request's, never above the expert's context, and
    cut so that the call's worst case (`prompt_bound` prompt tokens, every completion token
    written) costs at most `max_cost_usd`. At least 1: a call that cannot fit the cap at all is
    for the router to exclude, not for this to make free."""
    tokens = min(max_tokens, expert.context_length)
    if max_cost_usd is not None and expert.output_price > 0:
        room = (max_cost_usd * 1e6 - prompt_bound * expert.input_price) / expert.output_price
        tokens = min(tokens, math.floor(room))
    return max(1, tokens)
