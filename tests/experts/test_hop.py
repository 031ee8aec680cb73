"""The product's hop (aiohttp) against real servers on 127.0.0.1: answers, streams, headers,
errors translated as the httpx hop's are, timeouts, and a stream closed early."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from experts.client import ExpertClient, Timeouts
from experts.engines import make_engine
from experts.errors import ExpertHTTPError, ExpertTimeout, ExpertUnavailable
from experts.hop import AiohttpHop, HopError, HopTimeouts
from experts.pool import ExpertConfig
from experts.testing import FakeExpert
from tests.api.conftest import wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

BODY = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 5}
FAST = HopTimeouts(connect=1.0, read=5.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A Starlette app under uvicorn on a free port, for one test."""

    def __init__(self, app: Starlette) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> _Server:
        self.task = asyncio.create_task(self.server.serve())

        async def started() -> bool:
            return bool(self.server.started)

        await wait_for(started)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = self.server.force_exit = True
        await self.task


def _client(url: str, hop: AiohttpHop, read: float = 5.0) -> ExpertClient:
    config = ExpertConfig(
        name="e", engine="openai", base_url=f"{url}/v1", model="org/e", max_concurrency=2,
        api_key_env="COE_TEST_KEY",
    )  # fmt: skip
    engines = {"e": make_engine(config, Path("."))}
    return ExpertClient(httpx.AsyncClient(), engines, Timeouts(connect=1.0, read=read), hop=hop)


@pytest.fixture
async def hop() -> AsyncIterator[AiohttpHop]:
    hop = AiohttpHop(max_connections=8)
    yield hop
    await hop.aclose()


async def test_a_whole_answer_and_a_stream_from_the_fake_expert(
    hop: AiohttpHop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COE_TEST_KEY", "sk-test")
    fake = FakeExpert("e", default="four it is")
    async with _Server(fake.app) as server:
        client = _client(server.url, hop)
        answer = await client.complete("e", BODY)
        assert answer["choices"][0]["message"]["content"] == "four it is"
        assert fake.requests[-1]["model"] == "org/e" and fake.requests[-1]["stream"] is False
        stream = await client.open_stream("e", BODY | {"stream_options": {"include_usage": True}})
        events = [e async for e in stream]
        await stream.aclose()
        text = "".join(c["delta"].get("content", "") for e in events for c in e["choices"])
        assert text == "four it is" and events[-1]["usage"]["completion_tokens"] == 3
        assert client.in_flight("e") == 0


async def test_headers_reach_the_expert_and_connections_are_reused(hop: AiohttpHop) -> None:
    seen: list[tuple[str, str | None]] = []

    async def chat(request: Request) -> Response:
        peer = request.client
        seen.append((f"{peer.host}:{peer.port}" if peer else "", request.headers.get("x-t")))
        return JSONResponse({"choices": [], "body": json.loads(await request.body())})

    async with _Server(Starlette(routes=[Route("/c", chat, methods=["POST"])])) as server:
        for _ in range(3):
            response = await hop.post(f"{server.url}/c", b'{"a": 1}', {"x-t": "v"}, FAST)
            assert response.status == 200
            assert json.loads(await response.read())["body"] == {"a": 1}
    assert [h for _, h in seen] == ["v"] * 3
    assert len({peer for peer, _ in seen}) == 1  # one kept-alive connection


async def test_long_and_crlf_lines_are_split_whole(hop: AiohttpHop) -> None:
    long = "x" * 300_000  # over aiohttp's own readline limit

    async def chat(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield f"data: {long}\r\n".encode()
            yield b"\r\ndata: a"
            yield b"b\n\nlast"

        return StreamingResponse(body())

    async with _Server(Starlette(routes=[Route("/c", chat, methods=["POST"])])) as server:
        response = await hop.post(f"{server.url}/c", b"{}", {}, FAST)
        lines = [line async for line in response.lines()]
        await response.aclose()
    assert lines == [f"data: {long}".encode(), b"", b"data: ab", b"", b"last"]


async def test_errors_are_translated_as_the_httpx_hops_are(hop: AiohttpHop) -> None:
    refused = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(HopError) as info:
        await hop.post(f"{refused}/c", b"{}", {}, FAST)
    assert info.value.kind == "transport" and "ConnectError" in str(info.value)
    with pytest.raises(ExpertUnavailable, match="ConnectError"):
        await _client(refused, hop).complete("e", BODY)

    async def failing(request: Request) -> Response:
        return JSONResponse({"error": {"message": "nope"}}, status_code=503)

    app = Starlette(routes=[Route("/v1/chat/completions", failing, methods=["POST"])])
    async with _Server(app) as server:
        client = _client(server.url, hop)
        with pytest.raises(ExpertHTTPError, match="nope") as error:
            await client.complete("e", BODY)
        assert error.value.status_code == 503
        with pytest.raises(ExpertHTTPError, match="nope"):
            await client.open_stream("e", BODY)
        assert client.in_flight("e") == 0


async def test_a_silent_expert_times_out(hop: AiohttpHop) -> None:
    async def silent(request: Request) -> Response:
        await asyncio.sleep(30)
        return Response()

    app = Starlette(routes=[Route("/v1/chat/completions", silent, methods=["POST"])])
    async with _Server(app) as server:
        with pytest.raises(ExpertTimeout, match="read timeout"):
            await _client(server.url, hop, read=0.2).complete("e", BODY)


async def test_a_stream_closed_early_closes_its_connection(hop: AiohttpHop) -> None:
    """What cancels a generation upstream: the expert sees its client go away."""
    gone = asyncio.Event()
    fake = FakeExpert("e", default="one two three four five six", chunk_delay_s=0.05)

    async def chat(request: Request) -> Response:
        response = await fake._chat(request)
        assert isinstance(response, StreamingResponse)

        async def watched() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.body_iterator:
                    yield chunk if isinstance(chunk, bytes) else str(chunk).encode()
            finally:
                gone.set()

        return StreamingResponse(watched(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    async with _Server(app) as server:
        client = _client(server.url, hop)
        stream = await client.open_stream("e", BODY)
        await stream.aclose()
        await asyncio.wait_for(gone.wait(), timeout=5)
        assert client.in_flight("e") == 0
