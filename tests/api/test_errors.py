"""Bad input gets OpenAI's error envelope and a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "coe-auto", "messages": []}, "messages"),
        ({"model": "coe-auto"}, "messages"),
        ({"messages": HELLO}, "model"),
        (
            {"model": "coe-auto", "messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role",
        ),
        ({"model": "coe-auto", "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"model": "coe-auto", "messages": "hello"}, "messages"),
        ({"model": 5, "messages": HELLO}, "model"),
        ({"model": "coe-auto", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "coe-auto", "messages": HELLO, "temperature": 2.5}, "temperature"),
        ({"model": "coe-auto", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "coe-auto", "messages": HELLO, "n": 3}, "n"),
        ({"model": "coe-auto", "messages": HELLO, "coe": {"nonsense": 1}}, "coe.nonsense"),
        ({"model": "coe-auto", "messages": HELLO, "coe": {"cost_weight": -1}}, "coe.cost_weight"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    gateway: Gateway, payload: dict[str, Any], param: str
) -> None:
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert set(error) >= {"message", "type", "param", "code"}


async def test_invalid_json_is_400(gateway: Gateway) -> None:
    r = await gateway.client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


async def test_unknown_model_is_404_listing_valid_names(gateway: Gateway) -> None:
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "gpt-9", "messages": HELLO}
    )
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found"
    for name in ("alpha", "beta", "coe-auto", "coe-compose"):
        assert name in error["message"]


async def test_unknown_router_is_400(gateway: Gateway) -> None:
    payload = {"model": "coe-auto", "messages": HELLO, "coe": {"router": "crystal-ball"}}
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "coe.router"
    assert "cheapest" in r.json()["error"]["message"]


async def test_oversized_body_is_413(gateway: Gateway) -> None:
    big = [{"role": "user", "content": "x" * 30_000}]
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": big}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


async def test_unknown_path_and_method_use_the_envelope(gateway: Gateway) -> None:
    r = await gateway.client.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    r = await gateway.client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


async def test_oversized_chunked_body_without_length_is_413(gateway: Gateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "coe-auto", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    r = await gateway.client.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
