"""A key reaches only what is its own: feedback on its own requests, its own cached answers
(unless the cache is shared on purpose)."""

from __future__ import annotations

from api.keys import new_key
from tests.api.conftest import GatewayFactory
from tests.conftest import Gateway

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Say hello"}]}


async def _keys(gw: Gateway) -> dict[str, dict[str, str]]:
    headers = {}
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        secret, key = new_key(name, admin=admin)
        await gw.app.state.store.add_key(key)
        headers[name] = {"authorization": f"Bearer {secret}"}
    return headers


async def test_only_the_requests_key_or_an_admin_may_send_feedback(gateway: Gateway) -> None:
    keys = await _keys(gateway)
    answer = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=keys["alice"])
    feedback = {"request_id": answer.json()["id"], "score": 1.0}
    refused = await gateway.client.post("/v1/feedback", json=feedback, headers=keys["bob"])
    assert refused.status_code == 404  # not "forbidden": another key's ids are not confirmed
    for who in ("alice", "root"):
        ok = await gateway.client.post("/v1/feedback", json=feedback, headers=keys[who])
        assert ok.status_code == 200, who
    stored = await gateway.app.state.store.feedback()
    assert len(stored) == 2 and stored[0].key_id is not None


async def test_the_cache_is_per_key_unless_shared(make_gateway: GatewayFactory) -> None:
    chat = {**CHAT, "temperature": 0}
    for shared, bob_hits in ((False, False), (True, True)):
        async with make_gateway(cache="exact", cache_shared=shared) as gw:
            keys = await _keys(gw)
            first = await gw.client.post("/v1/chat/completions", json=chat, headers=keys["alice"])
            again = await gw.client.post("/v1/chat/completions", json=chat, headers=keys["alice"])
            bob = await gw.client.post("/v1/chat/completions", json=chat, headers=keys["bob"])
            assert not first.json()["coe"]["cache_hit"] and again.json()["coe"]["cache_hit"]
            assert bob.json()["coe"]["cache_hit"] is bob_hits, shared
