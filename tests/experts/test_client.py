"""The expert client over `httpx.MockTransport`: answers, streams, and translated errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from experts.client import ExpertClient, Timeouts
from experts.engines import make_engine
from experts.errors import ExpertHTTPError, ExpertTimeout, ExpertUnavailable
from experts.pool import ExpertConfig

pytestmark = pytest.mark.asyncio

ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}
BODY = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 5}


def make_client(
    handler: Callable[[httpx.Request], httpx.Response], max_concurrency: int = 2, read: float = 5.0
) -> ExpertClient:
    config = ExpertConfig(
        name="e",
        engine="openai",
        base_url="http://e.test/v1",
        model="org/e",
        max_concurrency=max_concurrency,
        api_key_env="COE_TEST_KEY",
    )
    engines = {"e": make_engine(config, Path("."))}
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ExpertClient(http, engines, Timeouts(connect=1.0, read=read))


async def test_complete_sends_the_served_model_and_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COE_TEST_KEY", "sk-test")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    assert await make_client(handler).complete("e", BODY) == ANSWER
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://e.test/v1/chat/completions"
    assert sent["model"] == "org/e" and sent["stream"] is False
    assert seen[0].headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (401, True), (404, True), (400, False), (422, False)],
)
async def test_http_errors_carry_status_and_message(status: int, retryable: bool) -> None:
    client = make_client(lambda r: httpx.Response(status, json={"error": {"message": "nope"}}))
    with pytest.raises(ExpertHTTPError) as info:
        await client.complete("e", BODY)
    assert info.value.status_code == status
    assert info.value.retryable is retryable
    assert "nope" in str(info.value)


async def test_connection_refused_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ExpertUnavailable, match="ConnectError"):
        await make_client(handler).complete("e", BODY)


async def test_read_timeout_is_a_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ExpertTimeout):
        await make_client(handler).complete("e", BODY)


async def test_non_json_answer_is_a_bad_gateway() -> None:
    with pytest.raises(ExpertHTTPError, match="not JSON"):
        await make_client(lambda r: httpx.Response(200, text="<html>")).complete("e", BODY)


def sse(*events: object) -> bytes:
    return b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )


async def test_stream_yields_events_until_done() -> None:
    chunks = [{"choices": [{"delta": {"content": c}}]} for c in ("a", "b")]
    body = sse(*chunks, "[DONE]", {"ignored": True})
    client = make_client(lambda r: httpx.Response(200, content=body))
    stream = await client.open_stream("e", BODY)
    assert stream.first == chunks[0]
    assert [c async for c in stream] == chunks
    await stream.aclose()
    assert client.in_flight("e") == 0


async def test_stream_error_before_first_event_is_raised_and_frees_the_slot() -> None:
    client = make_client(lambda r: httpx.Response(502, json={"error": {"message": "down"}}))
    with pytest.raises(ExpertHTTPError):
        await client.open_stream("e", BODY)
    client2 = make_client(lambda r: httpx.Response(200, content=b""))
    with pytest.raises(ExpertUnavailable, match="before the first event"):
        await client2.open_stream("e", BODY)
    client3 = make_client(lambda r: httpx.Response(200, content=sse({"error": {"message": "x"}})))
    with pytest.raises(ExpertHTTPError):
        await client3.open_stream("e", BODY)
    assert client.in_flight("e") == client2.in_flight("e") == client3.in_flight("e") == 0


async def test_concurrency_is_bounded_per_expert() -> None:
    release = asyncio.Event()
    peak = 0
    active = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal peak, active
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        return httpx.Response(200, json=ANSWER)

    client = make_client(handler, max_concurrency=2)  # type: ignore[arg-type]
    tasks = [asyncio.create_task(client.complete("e", BODY)) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert client.in_flight("e") == 2 and client.waiting["e"] == 3
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2 and client.waiting["e"] == 0
