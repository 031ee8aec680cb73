"""coe-auto keeps a conversation on its expert unless switching gains more than `stickiness`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import redis

from api.schemas import ChatCompletionRequest
from api.sticky import Stickiness
from router.base import Router
from tests.api.conftest import GatewayFactory
from tests.conftest import Gateway

#: Predicted quality (alpha, beta) by a keyword in the last user turn.
QUALITY = {"easy": (0.6, 0.5), "medium": (0.5, 0.58), "hard": (0.3, 0.9)}


class KeywordRouter(Router):
    name = "keywords"
    uses_embeddings = False

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        rows = [next(v for k, v in QUALITY.items() if k in q.split()[0]) for q in queries]
        return np.array(rows, dtype=float)


def install(gw: Gateway) -> None:
    routing = gw.app.state.routing
    routing.routers["keywords"] = KeywordRouter().fit_pool(list(routing.experts.values()))


def turns(*texts: str) -> list[dict[str, str]]:
    """A conversation whose user turns are `texts`, each answered."""
    messages: list[dict[str, str]] = []
    for text in texts:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    return messages[:-1]


async def ask(gw: Gateway, messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    coe = {"router": "keywords", "cost_weight": 0} | extra.pop("coe", {})
    body = {"model": "coe-auto", "messages": messages, "coe": coe} | extra
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_a_small_gain_keeps_the_conversation_and_a_large_one_switches(
    make_gateway: GatewayFactory,
) -> None:
    async with make_gateway(stickiness=0.1) as gw:
        install(gw)
        first = await ask(gw, turns("easy: name a colour"))
        assert first["model"] == "alpha" and "sticky" not in first["coe"]

        stay = await ask(gw, turns("easy: name a colour", "medium: and a fruit"))
        assert stay["model"] == "alpha"  # the router prefers beta by 0.08 only
        sticky = stay["coe"]["sticky"]
        assert sticky["previous"] == "alpha" and sticky["stayed"] is True
        assert sticky["gain"] == pytest.approx(0.08) and sticky["stickiness"] == 0.1
        assert "would gain only" in sticky["reason"]

        switch = await ask(
            gw, turns("easy: name a colour", "medium: and a fruit", "hard: prove it")
        )
        assert switch["model"] == "beta"
        assert switch["coe"]["sticky"]["stayed"] is False
        assert switch["coe"]["sticky"]["gain"] == pytest.approx(0.6)

        # the fourth turn remembers that beta answered the third
        again = await ask(gw, turns("easy: name a colour", "medium: and a fruit", "hard: prove it",
                                    "easy: thanks"))  # fmt: skip
        assert again["model"] == "beta" and again["coe"]["sticky"]["previous"] == "beta"


async def test_the_request_option_sets_the_threshold(make_gateway: GatewayFactory) -> None:
    async with make_gateway(stickiness=0.1) as gw:
        install(gw)
        await ask(gw, turns("easy: one"))
        kept = await ask(gw, turns("easy: one", "medium: two"))
        assert kept["model"] == "alpha" and kept["coe"]["sticky"]["stickiness"] == 0.1
        await ask(gw, turns("easy: uno"))
        moved = await ask(gw, turns("easy: uno", "medium: dos"), coe={"stickiness": 0})
        assert moved["model"] == "beta" and moved["coe"]["sticky"]["stayed"] is False


async def test_a_previous_expert_that_is_down_is_left(make_gateway: GatewayFactory) -> None:
    async with make_gateway(stickiness=1.0) as gw:
        install(gw)
        await ask(gw, turns("easy: one"))
        gw.app.state.pool.health.mark_failed("alpha", "test")
        moved = await ask(gw, turns("easy: one", "easy: two"))
        assert moved["model"] == "beta"
        assert moved["coe"]["sticky"] == {
            "previous": "alpha", "router_choice": "beta", "stickiness": 1.0, "stayed": False,
            "reason": "alpha is down",
        }  # fmt: skip


async def test_metadata_and_user_name_a_conversation(make_gateway: GatewayFactory) -> None:
    async with make_gateway(stickiness=0.1) as gw:
        install(gw)
        meta = {"metadata": {"conversation_id": "c-42"}}
        await ask(gw, [{"role": "user", "content": "easy: hi"}], **meta)
        # the client sends only its new turn: the id alone finds the conversation
        kept = await ask(gw, [{"role": "user", "content": "medium: more"}], **meta)
        assert kept["model"] == "alpha" and kept["coe"]["sticky"]["stayed"] is True
        other = await ask(gw, [{"role": "user", "content": "medium: more"}])
        assert other["model"] == "beta" and "sticky" not in other["coe"]


async def test_streams_remember_and_report_too(make_gateway: GatewayFactory) -> None:
    async with make_gateway(stickiness=0.1) as gw:
        install(gw)
        body = {"model": "coe-auto", "stream": True, "coe": {"router": "keywords"}}
        r = await gw.client.post("/v1/chat/completions", json=body | {"messages": turns("easy: a")})
        assert r.status_code == 200
        r = await gw.client.post(
            "/v1/chat/completions", json=body | {"messages": turns("easy: a", "medium: b")}
        )
        assert r.headers["x-coe-experts"] == "alpha"
        assert '"sticky":{"previous":"alpha"' in r.text


async def test_replicas_share_conversations_through_redis_with_expiry(
    make_gateway: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    shared = {"redis_url": redis_url, "redis_prefix": redis_prefix, "sticky_ttl_s": 600,
              "stickiness": 0.1}  # fmt: skip
    async with make_gateway(**shared) as one:
        install(one)
        await ask(one, turns("easy: first"))
    async with make_gateway(**shared) as two:
        install(two)
        kept = await ask(two, turns("easy: first", "medium: second"))
    assert kept["model"] == "alpha" and kept["coe"]["sticky"]["previous"] == "alpha"
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{redis_prefix}cache:sticky:*"))
    assert len(keys) == 2  # one per answered turn
    assert all(0 < client.pttl(k) <= 600_000 for k in keys)
    client.close()


def test_the_keys_of_consecutive_turns_meet() -> None:
    def request(messages: list[dict[str, str]], **extra: Any) -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate(
            {"model": "coe-auto", "messages": messages} | extra
        )

    one = request(turns("easy: a"))
    two = request(turns("easy: a", "medium: b"))
    three = request(turns("easy: a", "medium: b", "hard: c"))
    assert Stickiness.earlier_key(one) is None
    assert Stickiness.earlier_key(two) == Stickiness.this_key(one)
    assert Stickiness.earlier_key(three) == Stickiness.this_key(two) != Stickiness.this_key(one)
    # a different opening is a different conversation
    assert Stickiness.earlier_key(request(turns("easy: z", "medium: b"))) != Stickiness.this_key(
        one
    )
    # `user` ties the turns to the user and the conversation's opening
    mine, theirs = request(turns("easy: a"), user="u1"), request(turns("easy: a"), user="u2")
    assert Stickiness.this_key(mine) != Stickiness.this_key(theirs)
    assert Stickiness.earlier_key(request(turns("easy: a", "x: y"), user="u1")) == (
        Stickiness.this_key(mine)
    )
