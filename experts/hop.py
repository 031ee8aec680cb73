"""The HTTP hop from the gateway to an expert: one POST, its status, its body or its lines.

`ExpertClient` speaks to experts through a `Hop`, so the HTTP library is a choice made once:

- `AiohttpHop` is the product's: aiohttp's client parses HTTP in C and takes a pooled
  connection in O(1), where httpx → httpcore → anyio spent ~38 % of the gateway's CPU under
  load building the request, walking its pool and reading the body (`benchmarks/expert_hop.py`
  measures the two side by side).
- `HttpxHop` runs the same calls over an `httpx.AsyncClient`: what tests inject (an
  `httpx.MockTransport`, `experts.testing.FakeNetwork`), and what `ExpertClient` uses when it is
  given only an httpx client.

Errors leave a hop as `HopError` (connect, timeout or transport), which `ExpertClient` turns
into `experts.errors` with the expert's name; the cause is kept.

Example::

    hop = AiohttpHop(max_connections=512)
    response = await hop.post(url, b'{"messages": []}', {}, HopTimeouts(5.0, 120.0))
    body = await response.read()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpHop", "Hop", "HopError", "HopResponse", "HopTimeouts", "HttpxHop"]

JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class HopTimeouts:
    """Seconds: `connect` for a new connection, `read` for the first byte and between reads
    (and for a free connection, when every one of the pool is busy)."""

    connect: float
    read: float


class HopError(Exception):
    """A call that got no HTTP answer: `kind` says whether it could not connect, timed out
    waiting for bytes, or lost its connection; the message names the library's error."""

    def __init__(self, kind: Literal["connect", "timeout", "transport"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class HopResponse(Protocol):
    """An expert's answer whose status line and headers are in; the body is read once."""

    status: int

    async def read(self) -> bytes:
        """The whole body (then the connection goes back to its pool)."""

    def lines(self) -> AsyncIterator[bytes]:
        """The body's lines without their line ends, as they arrive."""

    async def aclose(self) -> None:
        """Free the connection: back to its pool when the body was read to its end, closed
        otherwise (which cancels a generation still running upstream)."""


class Hop(Protocol):
    """POSTs to experts over pooled connections."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: HopTimeouts
    ) -> HopResponse:
        """Send `body` (JSON) and return once the answer's headers are in."""

    async def aclose(self) -> None:
        """Close every pooled connection."""


# --- aiohttp: the product's hop ----------------------------------------------------------------


def _aiohttp_error(exc: BaseException) -> HopError:
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return HopError("connect", f"connect timed out ({name})")
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's read timeouts subclass it
        return HopError("timeout", name)
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return HopError("transport", f"ConnectError: {exc}")
    return HopError("transport", f"{name}: {exc or 'connection failed'}")


_AIOHTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _AIOHTTP_ERRORS as exc:
            raise _aiohttp_error(exc) from exc
        finally:
            self._response.release()

    async def lines(self) -> AsyncIterator[bytes]:
        # Split the reads ourselves: aiohttp's readline refuses lines over its buffer's limit,
        # and one read often holds several events.
        pending = b""
        content = self._response.content
        try:
            while chunk := await content.readany():
                pending += chunk
                *whole, pending = pending.split(b"\n")
                for line in whole:
                    yield line.rstrip(b"\r")
        except _AIOHTTP_ERRORS as exc:
            raise _aiohttp_error(exc) from exc
        if pending:
            yield pending

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpHop:
    """One aiohttp session for every expert: `max_connections` in all (idle ones kept alive),
    created on first use inside the running event loop."""

    def __init__(self, max_connections: int = 512) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        #: built once per value: a `ClientTimeout` and a parsed URL per call were measurable
        self._timeouts: dict[HopTimeouts, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Idle connections are dropped after 4 s, before servers drop theirs (uvicorn,
            # under vLLM, after 5 s): a POST sent on a connection the server is closing fails,
            # and is not retried.
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=4.0
            )
            # experts are on the pool file's URLs: no cookies, no proxy from the environment
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: HopTimeouts
    ) -> HopResponse:
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            timeout = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.connect + timeouts.read,  # a free connection, then connecting
                sock_connect=timeouts.connect,
                sock_read=timeouts.read,
            )
        address = self._urls.get(url)
        if address is None:
            if len(self._urls) > 1_000:  # base URLs change only when a local expert restarts
                self._urls.clear()
            address = self._urls[url] = yarl.URL(url)
        try:
            response = await self._open().post(
                address, data=body, headers={**JSON_HEADERS, **headers}, timeout=timeout
            )
        except _AIOHTTP_ERRORS as exc:
            raise _aiohttp_error(exc) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- httpx: what tests inject ------------------------------------------------------------------


def _httpx_error(exc: httpx.TransportError) -> HopError:
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return HopError("connect", f"connect timed out: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return HopError("timeout", name)
    return HopError("transport", f"{name}: {exc or 'connection failed'}")


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.TransportError as exc:
            raise _httpx_error(exc) from exc
        finally:
            await self._response.aclose()

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for line in self._response.aiter_lines():
                yield line.encode()
        except httpx.TransportError as exc:
            raise _httpx_error(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxHop:
    """The hop over an `httpx.AsyncClient` (its transport decides where requests go)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        #: parsed once: httpx parses a URL string on every request, character by character
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, address: str) -> httpx.URL:
        url = self._urls.get(address)
        if url is None:
            if len(self._urls) > 1_000:  # base URLs change only when a local expert restarts
                self._urls.clear()
            url = self._urls[address] = httpx.URL(address)
        return url

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: HopTimeouts
    ) -> HopResponse:
        timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.read
        )
        request = self.http.build_request(
            "POST", self._url(url), content=body, headers={**JSON_HEADERS, **headers},
            timeout=timeout,
        )  # fmt: skip
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _httpx_error(exc) from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self.http.aclose()
