"""Shared fixtures: a gateway wired to fake experts through an in-process network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI

from api.app import create_app
from api.settings import Settings
from experts.hop import AiohttpHop
from experts.testing import FakeExpert, FakeNetwork

#: Two experts on the fake network; `beta` is dearer than `alpha`.
POOL = {
    "experts": [
        {
            "name": "alpha",
            "engine": "openai",
            "base_url": "http://alpha/v1",
            "input_price": 1.0,
            "output_price": 2.0,
            "max_concurrency": 4,
        },
        {
            "name": "beta",
            "engine": "vllm",
            "base_url": "http://beta/v1",
            "model": "org/beta-7b",
            "input_price": 3.0,
            "output_price": 6.0,
            "max_concurrency": 4,
        },
    ]
}


@pytest.fixture(autouse=True)
def no_real_http(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests may not reach a real server: any real outbound HTTP call fails, unless the test
    is marked `integration` or `vllm` (those talk to real servers on 127.0.0.1 on purpose)."""
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("vllm"):
        return

    async def refuse(self: object, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(
            f"a unit test tried real HTTP to {request.url}; use httpx.MockTransport or "
            "experts.testing.FakeNetwork, or mark the test integration"
        )

    async def refuse_hop(self: object, url: str, *args: object) -> object:
        raise RuntimeError(
            f"a unit test tried real HTTP to {url}; inject a transport (httpx.MockTransport or "
            "experts.testing.FakeNetwork), or mark the test integration"
        )

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", refuse)
    monkeypatch.setattr(AiohttpHop, "post", refuse_hop)


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    fakes: dict[str, FakeExpert]
    network: FakeNetwork


def write_pool(path: Path, pool: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(pool))
    return path


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    fakes = {
        "alpha": FakeExpert("alpha", default="alpha says hi"),
        "beta": FakeExpert("beta", default="beta says hi"),
    }
    network = FakeNetwork(fakes)
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", POOL),
        work_dir=tmp_path / "work",
        max_body_bytes=20_000,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings, transport=network)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(app, client, fakes, network)
