"""Fixtures for the store's backends: the real Redis on 127.0.0.1:6379 (db 7, a key prefix per
test, deleted afterwards), a Redis server of the test's own (to stop it), and a gateway whose
settings a test chooses."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.app import create_app
from api.settings import Settings
from api.store.redis import RedisStore
from experts.testing import FakeExpert, FakeNetwork
from tests.conftest import POOL, Gateway, write_pool

REDIS_URL = os.environ.get("COE_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _reachable(REDIS_URL):
        if os.environ.get("CI"):
            pytest.fail(f"no Redis at {REDIS_URL}; .ci/run starts one")
        pytest.skip(f"no Redis at {REDIS_URL} (start redis-server, or set COE_TEST_REDIS_URL)")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"coe-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, timeout_s=2.0)
    yield store
    await store.aclose()


def _free_port() -> int:
    """A free port in issue 7's range (18700-18799)."""
    for port in range(18700 + os.getpid() % 50, 18800):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18700-18799")


class OwnRedis:
    """A redis-server that a test starts, stops and restarts (no persistence)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis(_free_port())
    server.start()
    yield server
    server.stop()


class GatedNetwork(FakeNetwork):
    """The fake network, holding every expert call until `gate` is set."""

    def __init__(self, experts: dict[str, FakeExpert], gate: asyncio.Event) -> None:
        super().__init__(experts)
        self.gate = gate

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.gate.wait()
        return await super().handle_async_request(request)


GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def make_gateway(tmp_path: Path) -> GatewayFactory:
    """`async with make_gateway(redis_url=..., cache="exact") as gw:` a gateway over fake
    experts with these settings; with `gate`, expert calls wait until it is set."""

    @asynccontextmanager
    async def make(gate: asyncio.Event | None = None, **settings: Any) -> AsyncIterator[Gateway]:
        fakes = {
            "alpha": FakeExpert("alpha", default="alpha says hi"),
            "beta": FakeExpert("beta", default="beta says hi"),
        }
        network = FakeNetwork(fakes) if gate is None else GatedNetwork(fakes, gate)
        config = Settings(
            pool=write_pool(tmp_path / "pool.yaml", POOL),
            work_dir=tmp_path / "work",
            _env_file=None,  # type: ignore[call-arg]
            **settings,
        )
        app = create_app(config, transport=network)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Gateway(app, client, fakes, network)

    return make


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
