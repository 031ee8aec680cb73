"""Residency through the gateway: `/ready` shows queue depth and residency, a call wakes its
expert, and coe-auto routes to the resident expert when an asleep one is no better."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from tests.conftest import Gateway, write_pool

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "Hello"}]


def vllm(name: str) -> dict[str, object]:
    return {"name": name, "engine": "vllm", "base_url": f"http://{name}/v1", "max_concurrency": 1,
            "input_price": 1.0, "output_price": 1.0}  # fmt: skip


@pytest.fixture
async def sleepy(tmp_path: Path) -> AsyncIterator[Gateway]:
    fakes = {n: FakeExpert(n, default=f"{n} says hi") for n in ("x", "y")}
    network = FakeNetwork(fakes)
    pool = {"experts": [vllm("x"), vllm("y")], "max_resident": 1}
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", pool),
        work_dir=tmp_path / "work",
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings, transport=network)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(app, client, fakes, network)


async def test_ready_shows_residency_and_a_call_wakes_its_expert(sleepy: Gateway) -> None:
    r = await sleepy.client.get("/ready")
    assert r.status_code == 200
    experts = r.json()["experts"]
    assert experts["x"]["status"] == "ok" and experts["x"]["resident"]
    assert experts["y"]["status"] == "asleep" and not experts["y"]["resident"]
    assert experts["y"]["queued"] == 0 and experts["y"]["in_flight"] == 0
    assert sleepy.fakes["y"].sleep_calls == ["sleep level=1"]

    r = await sleepy.client.post("/v1/chat/completions", json={"model": "y", "messages": HELLO})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "y says hi"
    assert sleepy.fakes["x"].sleep_calls == ["sleep level=1"]
    assert sleepy.fakes["y"].sleep_calls == ["sleep level=1", "wake_up"]
    experts = (await sleepy.client.get("/ready")).json()["experts"]
    assert experts["y"]["resident"] and experts["y"]["loads"] == 1
    assert experts["x"]["status"] == "asleep"


async def test_queued_calls_show_in_ready_while_their_expert_wakes(sleepy: Gateway) -> None:
    pool = sleepy.app.state.pool
    await pool.scheduler.acquire("x")  # x busy: y's calls must wait
    calls = [
        asyncio.create_task(
            sleepy.client.post("/v1/chat/completions", json={"model": "y", "messages": HELLO})
        )
        for _ in range(3)
    ]
    for _ in range(1000):  # the three requests reach the scheduler within a few loop turns
        if pool.scheduler.queued("y") == 3:
            break
        await asyncio.sleep(0)
    experts = (await sleepy.client.get("/ready")).json()["experts"]
    assert experts["y"]["queued"] == 3 and experts["y"]["waiting"] == 3
    assert experts["x"]["in_flight"] == 1
    pool.scheduler.release("x")
    assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
    assert sleepy.fakes["y"].sleep_calls == ["sleep level=1", "wake_up"]  # one wake, 3 calls


async def test_coe_auto_prefers_the_resident_expert_within_tolerance(sleepy: Gateway) -> None:
    payload = {"model": "coe-auto", "messages": HELLO}
    r = await sleepy.client.post("/v1/route", json=payload)
    assert r.json()["chosen"] == "x" and r.json()["rerouted_from"] is None
    await sleepy.client.post("/v1/chat/completions", json={"model": "y", "messages": HELLO})
    # now y is resident: the equally good x would need a wake, so coe-auto takes y
    r = await sleepy.client.post("/v1/route", json=payload)
    assert r.json()["ranked"] == ["y", "x"] and r.json()["rerouted_from"] == "x"
    r = await sleepy.client.post("/v1/chat/completions", json=payload)
    assert r.json()["coe"]["experts"] == ["y"]
    assert sleepy.fakes["x"].sleep_calls == ["sleep level=1"]  # x was not woken
