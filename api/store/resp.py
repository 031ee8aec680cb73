"""A small pipelined Redis client for the two calls every request makes (admission, log batch).

redis-py's asyncio client spends more CPU per command than the command costs Redis: a pooled
connection checked out and back, a retry wrapper, a timeout context around every read, the
command packed in Python, one socket write per command. Under load that was about a third of
the gateway's CPU. `PipelinedRedis` is the other shape: one connection shared by every request
in flight, commands packed by hiredis (C), the writes of one event-loop turn sent in one system
call, replies parsed by `hiredis.Reader` and handed back in order (Redis answers the commands
of one connection in the order it read them), so a reply's only Python is a loop over the parsed
replies. Everything else the store does (keys, dashboard reads, scripts' loading) stays on
redis-py.

Errors: a lost connection (reset, refused, closed by Redis) or a command unanswered after
`timeout_s` fails every command in flight with `RespUnavailable` (an `OSError`, which the store
translates to `StoreUnavailable` as it does redis-py's errors); the next call connects again.
An error reply (`-NOSCRIPT ...`, `-WRONGTYPE ...`) is not raised: it is returned in the reply's
place as a `ReplyError`, as one command of a pipeline may fail alone.

Example::

    redis = PipelinedRedis.from_url("redis://127.0.0.1:6379/0", timeout_s=0.5)
    [pong] = await redis.execute(pack(("PING",)))
    await redis.aclose()
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

__all__ = ["PipelinedRedis", "ReplyError", "RespUnavailable", "pack", "pack_many"]

ReplyError = hiredis.ReplyError
Arg = bytes | str | int | float


class RespUnavailable(ConnectionError):
    """Redis could not be reached, went away, or did not answer in time."""


# hiredis's stub types its argument as a tuple of one item; it takes any number
_pack_command: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]


def pack(command: Sequence[Arg]) -> bytes:
    """One command in the protocol's wire form (hiredis packs it in C)."""
    return _pack_command(tuple(command))


def pack_many(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Several commands, to send as one pipeline."""
    return b"".join([_pack_command(tuple(c)) for c in commands])


class _Pending:
    """The replies one `execute` waits for."""

    __slots__ = ("count", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, sent_at: float) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Protocol(asyncio.Protocol):
    """One connection: writes coalesced per loop turn, replies matched FIFO to their callers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader()
        self.pending: deque[_Pending] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None  # why the connection is unusable (None: usable)
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances: no isinstance check
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RespUnavailable(f"redis: unreadable reply ({exc})"))
                return
            if reply is False:
                return
            if not pending:
                self._fail(RespUnavailable("redis: a reply nobody asked for"))
                return
            head = pending[0]
            head.replies.append(reply)
            if len(head.replies) == head.count:
                pending.popleft()
                if not head.future.done():  # its caller may have been cancelled
                    head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"redis: connection lost ({exc})" if exc else "redis: connection closed"
        self._fail(RespUnavailable(reason))

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        if self.lost is not None:
            raise RespUnavailable(str(self.lost))
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        now = self.loop.time()
        self.pending.append(_Pending(future, count, now))
        if not self._out:  # the first write of this loop turn: send them all at its end
            self.loop.call_soon(self._flush)
        self._out.append(data)
        if self._timer is None:
            self._timer = self.loop.call_at(now + self.timeout_s, self._check)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and self.lost is None and out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _check(self) -> None:
        """The oldest command unanswered after `timeout_s`: Redis counts as unreachable (one
        timer per connection, not one per command)."""
        self._timer = None
        if not self.pending or self.lost is not None:
            return
        deadline = self.pending[0].sent_at + self.timeout_s
        if self.loop.time() >= deadline:
            self._fail(RespUnavailable(f"redis: no reply within {self.timeout_s:g} s"))
            return
        self._timer = self.loop.call_at(deadline, self._check)

    def _fail(self, exc: RespUnavailable) -> None:
        """Every command in flight fails with `exc`; the connection is closed for good."""
        if self.lost is None:
            self.lost = exc
        while self.pending:
            future = self.pending.popleft().future
            if not future.done():
                future.set_exception(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._fail(RespUnavailable("redis: client closed"))


class PipelinedRedis:
    """One pipelined connection to Redis, opened on first use and again after it is lost.

    `timeout_s` bounds how long a command may wait for its reply, `connect_timeout_s` a new
    connection (with its `AUTH` and `SELECT`). Use it from one event loop.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        *,
        username: str | None = None,
        password: str | None = None,
        path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 0.5,
        connect_timeout_s: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.path = path
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s or timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, timeout_s: float = 0.5, connect_timeout_s: float | None = None
    ) -> PipelinedRedis:
        """`redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS) or
        `unix:///path?db=N`, as redis-py reads them."""
        options = parse_url(url)
        connection_class = options.get("connection_class")
        context = None
        if connection_class is SSLConnection:
            context = ssl.create_default_context()
        return cls(
            options.get("host", "127.0.0.1"),
            int(options.get("port", 6379)),
            int(options.get("db", 0)),
            username=options.get("username"),
            password=options.get("password"),
            path=options.get("path") if connection_class is UnixDomainSocketConnection else None,
            ssl_context=context,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
        )

    async def execute(self, data: bytes, count: int = 1) -> list[Any]:
        """Send `data` (`count` packed commands) and return their `count` replies, in order.

        Raises `RespUnavailable` when Redis cannot be reached or does not answer in time.
        """
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await protocol.send(data, count)

    async def call(self, *command: Arg) -> Any:
        """One command's reply (an error reply is returned as a `ReplyError`)."""
        [reply] = await self.execute(pack(command))
        return reply

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise RespUnavailable("redis: client closed")
        connecting = self._connecting
        if connecting is None or connecting.done():  # the first caller connects, others wait
            connecting = self._connecting = asyncio.ensure_future(self._open())
            # retrieved here, so a connection nobody waits for any more never logs its error
            connecting.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop, self.timeout_s)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.path is not None:
                    await loop.create_unix_connection(lambda: protocol, self.path)
                else:
                    await loop.create_connection(
                        lambda: protocol, self.host, self.port, ssl=self.ssl_context
                    )
                hello: list[tuple[Arg, ...]] = []
                if self.password is not None:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    hello.append(("AUTH", *auth))
                if self.db:
                    hello.append(("SELECT", self.db))
                if hello:
                    for reply in await protocol.send(pack_many(hello), len(hello)):
                        if isinstance(reply, ReplyError):
                            raise RespUnavailable(f"redis: {reply}")
        except TimeoutError as exc:
            protocol.close()
            raise RespUnavailable(
                f"redis: no connection within {self.connect_timeout_s:g} s"
            ) from exc
        except OSError as exc:
            protocol.close()
            if isinstance(exc, RespUnavailable):
                raise
            raise RespUnavailable(f"redis: cannot connect ({exc})") from exc
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        self._closed = True
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
