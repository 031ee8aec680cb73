"""Two real gateway processes (`coe serve`) sharing one Redis: 100 concurrent requests against a
key budget for 10 full-length answers never spend past the budget, whichever gateway takes
them (the reservation is one Lua script in Redis, at the most each call can cost)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from api.keys import new_key
from api.limits import nano_usd, period_window
from api.store.redis import RedisStore
from router.descriptor import ExpertDescriptor
from tests.api.conftest import _free_port

pytestmark = pytest.mark.integration

REPLY = " ".join(f"w{i}" for i in range(600))  # longer than max_tokens (512): cut there
HELLO = [{"role": "user", "content": "Say hello"}]


@contextlib.contextmanager
def _serve(argv: list[str], ready: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 90
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{argv} exited:\n{log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(ready, timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready} not ready:\n{log.read_text()}")
                time.sleep(0.2)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_two_gateways_on_one_redis_never_overrun_a_budget(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    expert_port = _free_port()
    pool = tmp_path / "pool.yaml"
    alpha = {"name": "alpha", "engine": "openai", "base_url": f"http://127.0.0.1:{expert_port}/v1",
             "input_price": 1.0, "output_price": 2.0, "max_concurrency": 256}  # fmt: skip
    pool.write_text(yaml.safe_dump({"experts": [alpha], "router": {"name": "cheapest"}}))
    env = {**os.environ, "COE_POOL": str(pool), "COE_REDIS_URL": redis_url,
           "COE_REDIS_PREFIX": redis_prefix, "COE_LOG_LEVEL": "warning",
           "COE_REDIS_CONNECT_TIMEOUT_S": "10", "COE_REDIS_TIMEOUT_S": "5"}  # fmt: skip
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, timeout_s=5)
    # a full-length answer: the fake counts the prompt's 2 words, the default max_tokens is 512
    one = ExpertDescriptor("alpha", 1.0, 2.0).cost_usd(2, 512)
    secret, key = new_key("two-gateways", budget_usd=10 * one, period="month")
    await store.add_key(key)
    coe = str(Path(sys.executable).with_name("coe"))
    with contextlib.ExitStack() as stack:
        stack.enter_context(_serve(
            [sys.executable, "-m", "experts.testing", "alpha", str(expert_port), "--reply", REPLY],
            f"http://127.0.0.1:{expert_port}/v1/models", tmp_path / "alpha.log", env,
        ))  # fmt: skip
        urls = []
        for i in range(2):
            port = _free_port()
            work = {**env, "COE_WORK_DIR": str(tmp_path / f"gw{i}"), "COE_PORT": str(port)}
            stack.enter_context(_serve([coe, "serve"], f"http://127.0.0.1:{port}/ready",
                                       tmp_path / f"gw{i}.log", work))  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
        body = {"model": "alpha", "messages": HELLO}  # no max_tokens: the gateway sends one
        headers = {"authorization": f"Bearer {secret}"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            responses = await asyncio.gather(*(
                client.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=headers)
                for i in range(100)
            ))  # fmt: skip
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and 5 <= codes.count(200) <= 10, codes
    answered = [r.json()["coe"]["cost_usd"] for r in responses if r.status_code == 200]
    assert all(cost == pytest.approx(one) for cost in answered)
    spent = await store.spent_nano_usd(key.id, period_window("month", time.time())[0])
    assert spent <= nano_usd(10 * one) and spent == pytest.approx(nano_usd(sum(answered)), abs=5)
    await store.aclose()
