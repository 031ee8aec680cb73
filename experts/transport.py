"""The gateway's HTTP transport to its experts: many small connection pools instead of one big one.

httpcore's connection pool, on every request it starts and every response it closes, walks all
of its connections and asks each idle one whether its socket is readable (a system call through
several layers of anyio). With one pool for the whole gateway, that walk grows with the number
of requests in flight: at 64 concurrent clients it took about half of the gateway's CPU, and
throughput fell as clients were added (see the README's performance section). Split into pools
of `per_shard` connections, each request walks at most that many; a request goes to the shard
with the fewest requests in flight, so no shard queues while another has room.

Example::

    http = httpx.AsyncClient(transport=ShardedTransport(max_connections=512))
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import httpx

__all__ = ["ShardedTransport"]


class _Released(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back once, when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None


class ShardedTransport(httpx.AsyncBaseTransport):
    """`max_connections` in all, as ⌈max_connections / per_shard⌉ independent pools."""

    def __init__(self, max_connections: int = 512, per_shard: int = 8) -> None:
        count = max(1, math.ceil(max_connections / per_shard))
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._shards = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(count)]
        self._busy = [0] * count

    def in_flight(self) -> int:
        """Requests whose response is not closed yet, over every shard."""
        return sum(self._busy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        index = busy.index(min(busy))  # the least busy shard; the first of equals stays warm
        busy[index] += 1

        def release() -> None:
            busy[index] -= 1

        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        # the same response with its body wrapped (a new httpx.Response would copy its headers)
        response.stream = _Released(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await self.aclose()
