"""Shared fixtures: a gateway wired to fake experts through an in-process network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from api.app import create_app
from api.settings import Settings
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


@dataclass
class Gateway:
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
            yield Gateway(client, fakes, network)
