"""An expert's slot is released on every path: a stream whose body is never read, a reader too
slow to finish, and calls past a full queue are shed (503 + retry-after) instead of queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from api.schemas import ChatCompletionRequest
from tests.api.conftest import GatewayFactory, wait_for
from tests.conftest import Gateway

HELLO = [{"role": "user", "content": "Say hello"}]
SCOPE: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.4"}}


async def _receive() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


async def _logged(gw: Gateway) -> Any:
    async def ready() -> bool:
        return bool(await gw.app.state.store.requests())

    await wait_for(ready, timeout_s=5)
    return (await gw.app.state.store.requests())[-1]


async def test_a_stream_whose_body_is_never_read_frees_its_slot(gateway: Gateway) -> None:
    chat = gateway.app.state.chat
    request = ChatCompletionRequest.model_validate(
        {"model": "alpha", "messages": HELLO, "stream": True}
    )
    response = await chat.stream(request)
    assert chat.pool.client.in_flight("alpha") == 1

    async def gone(message: dict[str, Any]) -> None:
        raise OSError("the client closed the connection")  # before the headers went out

    with pytest.raises(ClientDisconnect):
        await response(SCOPE, _receive, gone)
    assert chat.pool.client.in_flight("alpha") == 0
    record = await _logged(gateway)
    assert record.status == 499 and record.cost_usd > 0  # the prompt was read: it is paid


async def test_a_reader_too_slow_to_finish_is_cut_at_the_deadline(
    make_gateway: GatewayFactory,
) -> None:
    async with make_gateway(stream_deadline_s=0.5) as gw:
        gw.fakes["alpha"].enqueue("a b c d e f g h")
        chat = gw.app.state.chat
        request = ChatCompletionRequest.model_validate(
            {"model": "alpha", "messages": HELLO, "stream": True}
        )
        response = await chat.stream(request)
        sent: list[dict[str, Any]] = []

        async def stalled(message: dict[str, Any]) -> None:
            sent.append(message)
            if len(sent) > 2:
                await asyncio.sleep(3600)  # the client stops reading: its window is full

        await asyncio.wait_for(response(SCOPE, _receive, stalled), timeout=5)
        assert chat.pool.client.in_flight("alpha") == 0
        record = await _logged(gw)
        assert record.status == 499 and record.cost_usd > 0


async def test_calls_past_a_full_queue_are_shed_with_retry_after(
    make_gateway: GatewayFactory,
) -> None:
    gate = asyncio.Event()
    async with make_gateway(gate=gate, max_queue=2, queue_timeout_s=5) as gw:
        chat = {"model": "alpha", "messages": HELLO}
        held = [asyncio.create_task(gw.client.post("/v1/chat/completions", json=chat))
                for _ in range(4 + 2)]  # fmt: skip
        # alpha's 4 slots taken and 2 calls queued: the next one is shed at once
        scheduler = gw.app.state.pool.scheduler

        async def full() -> bool:
            return scheduler.in_flight("alpha") == 4 and scheduler.queued("alpha") == 2

        await wait_for(full)
        shed = await gw.client.post("/v1/chat/completions", json=chat)
        assert shed.status_code == 503 and shed.json()["error"]["code"] == "overloaded"
        assert 1 <= int(shed.headers["retry-after"]) <= 30
        assert "alpha" not in gw.app.state.pool.health.down()  # busy is not broken
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 6


async def test_a_call_that_waits_too_long_is_shed(make_gateway: GatewayFactory) -> None:
    gate = asyncio.Event()
    async with make_gateway(gate=gate, queue_timeout_s=0.3) as gw:
        chat = {"model": "alpha", "messages": HELLO}
        held = [asyncio.create_task(gw.client.post("/v1/chat/completions", json=chat))
                for _ in range(4)]  # fmt: skip
        scheduler = gw.app.state.pool.scheduler

        async def busy() -> bool:
            return scheduler.in_flight("alpha") == 4

        await wait_for(busy)
        late = await gw.client.post("/v1/chat/completions", json=chat)
        assert late.status_code == 503 and "retry-after" in late.headers
        assert scheduler.queued("alpha") == 0
        gate.set()
        await asyncio.gather(*held)
