"""The plan step: a request's kind and worst case before routing (no I/O, never refusing), and
the routed plan after."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import ModelNotFound
from api.plan import Planner
from api.schemas import ChatCompletionRequest
from tests.conftest import Gateway

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "Say hello"}]


def request(model: str, **coe: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": model, "messages": HELLO}
    if coe:
        body["coe"] = coe
    return ChatCompletionRequest.model_validate(body)


def planner(gw: Gateway) -> Planner:
    found: Planner = gw.app.state.chat.planner
    return found


@pytest.mark.parametrize(
    ("model", "coe", "kind", "calls"),
    [
        ("alpha", {}, "single", 1),
        ("coe-auto", {}, "single", 1),  # no step-wise router loaded: no cascade
        ("coe-compose", {"k": 2, "strategy": "aggregate"}, "compose", 3),
        ("coe-compose", {"k": 2, "strategy": "vote"}, "compose", 2),
        ("coe-compose", {"k": 2, "strategy": "moa", "layers": 3}, "compose", 7),
        ("no-such-model", {}, "single", 1),  # refused by `route`, after admission
    ],
)
async def test_the_shape_of_a_plan_needs_no_routing(
    gateway: Gateway, model: str, coe: dict[str, Any], kind: str, calls: int
) -> None:
    plan = planner(gateway).shape(request(model, **coe))
    assert (plan.kind, plan.max_calls, plan.routed, plan.decision) == (kind, calls, False, None)
    tokens, usd = plan.worst_case()
    assert tokens > 0 and usd > 0
    assert gateway.app.state.chat.limiter.estimate(plan) == (tokens, usd)


async def test_routing_a_plan_sets_its_experts_once(gateway: Gateway) -> None:
    routed = await planner(gateway).route(planner(gateway).shape(request("coe-auto")))
    assert routed.routed and routed.decision is not None
    assert routed.ranked == routed.decision.ranked and routed.ranked[0] == "alpha"
    named = await planner(gateway).plan(request("beta"))
    assert (named.ranked, named.decision) == (["beta"], None)  # named directly: not routed
    with pytest.raises(ModelNotFound, match="no-such-model"):
        await planner(gateway).plan(request("no-such-model"))


async def test_role_and_content_reads_as_the_dumped_messages_do() -> None:
    """Routing and the token bounds read each message's role and content only: the cheap view
    gives them what the whole dumps gave."""
    from router.query import estimate_tokens, max_prompt_tokens, routing_text

    request = ChatCompletionRequest.model_validate(
        {
            "model": "coe-auto",
            "messages": [
                {"role": "system", "content": "Be brief.", "name": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "Ünïcode? "},
                                             {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                {"role": "user", "content": "  and what is 2+2?  "},
            ],
        }
    )  # fmt: skip
    view = request.role_and_content()
    for dumped in (
        [m.model_dump() for m in request.messages],
        [m.model_dump(exclude_none=True) for m in request.messages],
    ):
        assert estimate_tokens(view) == estimate_tokens(dumped)
        assert max_prompt_tokens(view) == max_prompt_tokens(dumped)
        assert routing_text(view) == routing_text(dumped)
