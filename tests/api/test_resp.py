"""`api.store.resp`: packing, reply matching, timeouts and lost connections, without Redis.

The protocol is driven with bytes a test writes (a fake transport records what it sends); the
timeout test uses a real socket server on 127.0.0.1 that accepts and never answers. The same
client against the real Redis is in `test_resp_redis.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from api.store.resp import (
    PipelinedRedis,
    ReplyError,
    RespUnavailable,
    _Protocol,
    pack,
    pack_many,
)


class RecordingTransport:
    """What a protocol wrote, and whether it was aborted."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = True


def _protocol(timeout_s: float = 5.0) -> tuple[_Protocol, RecordingTransport]:
    protocol = _Protocol(asyncio.get_running_loop(), timeout_s)
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def test_commands_are_packed_in_the_wire_form() -> None:
    assert pack(("SET", "k", b"v\r\n", 12)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n12\r\n"
    )
    two = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert pack_many([("PING",), ("GET", "k")]) == two


async def test_the_writes_of_one_loop_turn_go_out_in_one_write() -> None:
    protocol, transport = _protocol()
    first = protocol.send(pack(("PING",)), 1)
    second = protocol.send(pack(("GET", "k")), 1)
    assert transport.writes == []  # nothing sent before the turn ends
    await asyncio.sleep(0)
    assert transport.writes == [pack(("PING",)) + pack(("GET", "k"))]
    protocol.data_received(b"+PONG\r\n$1\r\nv\r\n")
    assert await first == [b"PONG"] and await second == [b"v"]


async def test_replies_are_matched_in_order_across_split_reads() -> None:
    protocol, _ = _protocol()
    batch = protocol.send(pack_many([("INCR", "a"), ("GET", "b"), ("GET", "c")]), 3)
    single = protocol.send(pack(("GET", "d")), 1)
    for chunk in (b":1\r\n$", b"3\r\nabc", b"\r\n$-1\r\n*2\r\n:1", b"\r\n:2\r\n"):
        protocol.data_received(chunk)
    assert await batch == [1, b"abc", None]
    assert await single == [[1, 2]]


async def test_an_error_reply_takes_its_command_place_and_fails_nothing_else() -> None:
    protocol, _ = _protocol()
    batch = protocol.send(pack_many([("EVALSHA", "x", 0), ("PING",)]), 2)
    protocol.data_received(b"-NOSCRIPT No matching script.\r\n+PONG\r\n")
    error, pong = await batch
    assert isinstance(error, ReplyError) and str(error).startswith("NOSCRIPT")
    assert pong == b"PONG"


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others() -> None:
    protocol, _ = _protocol()
    gone = protocol.send(pack(("GET", "a")), 1)
    kept = protocol.send(pack(("GET", "b")), 1)
    gone.cancel()
    protocol.data_received(b"$1\r\na\r\n$1\r\nb\r\n")
    assert await kept == [b"b"]


async def test_a_lost_connection_fails_every_command_in_flight_and_later_ones() -> None:
    protocol, _ = _protocol()
    waiting = [protocol.send(pack(("PING",)), 1) for _ in range(3)]
    protocol.connection_lost(ConnectionResetError("reset by peer"))
    for future in waiting:
        with pytest.raises(RespUnavailable, match="connection lost"):
            await future
    with pytest.raises(RespUnavailable):
        protocol.send(pack(("PING",)), 1)


async def test_a_reply_nobody_asked_for_or_garbage_closes_the_connection() -> None:
    protocol, transport = _protocol()
    protocol.data_received(b"+PONG\r\n")
    assert transport.aborted and isinstance(protocol.lost, RespUnavailable)
    protocol, transport = _protocol()
    waiting = protocol.send(pack(("PING",)), 1)
    protocol.data_received(b"?garbage\r\n")
    with pytest.raises(RespUnavailable, match="unreadable"):
        await waiting
    assert transport.aborted


class LocalServer:
    """A TCP server on 127.0.0.1 running `handle` per connection; every connection is closed
    when the block ends."""

    def __init__(self, handle: Any = None) -> None:
        self.handle = handle
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(OSError):
            if self.handle is None:
                await reader.read(-1)  # accept, never answer
            else:
                await self.handle(reader, writer)

    async def __aenter__(self) -> LocalServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()


async def test_a_command_unanswered_after_the_timeout_fails_and_the_next_call_reconnects() -> None:
    async with LocalServer() as server:
        client = PipelinedRedis("127.0.0.1", server.port, timeout_s=0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RespUnavailable, match=r"no reply within 0\.1 s"):
            await client.call("PING")
        assert 0.09 <= loop.time() - started < 1.0
        first = client._protocol
        with pytest.raises(RespUnavailable):
            await client.call("PING")
        assert client._protocol is not first  # a new connection for the next call
        await client.aclose()


async def test_nothing_listening_is_unavailable_not_a_bare_os_error() -> None:
    async with LocalServer() as server:
        port = server.port  # closed when the block ends: nothing listens there after it
    client = PipelinedRedis("127.0.0.1", port, timeout_s=0.5)
    with pytest.raises(RespUnavailable, match="cannot connect"):
        await client.call("PING")
    await client.aclose()
    with pytest.raises(RespUnavailable, match="closed"):
        await client.call("PING")


async def test_concurrent_first_calls_share_one_connection() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(b"+PONG\r\n" * data.count(b"PING"))

    async with LocalServer(answer) as server:
        client = PipelinedRedis("127.0.0.1", server.port)
        replies = await asyncio.gather(*(client.call("PING") for _ in range(20)))
        assert replies == [b"PONG"] * 20 and len(server.writers) == 1
        await client.aclose()


def test_urls_are_read_as_redis_py_reads_them() -> None:
    client = PipelinedRedis.from_url("redis://user:secret@redis.example:6380/3", timeout_s=0.2)
    assert (client.host, client.port, client.db) == ("redis.example", 6380, 3)
    assert (client.username, client.password, client.timeout_s) == ("user", "secret", 0.2)
    assert client.connect_timeout_s == 0.2 and client.ssl_context is None
    assert PipelinedRedis.from_url("rediss://h:1/0").ssl_context is not None
    assert PipelinedRedis.from_url("unix:///tmp/r.sock?db=2").path == "/tmp/r.sock"
