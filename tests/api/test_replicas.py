"""Two real `coe serve` processes on one Redis behave as one gateway.

Both serve a pool of two vLLM experts that share one GPU (`max_resident: 1`), faked on real
ports with vLLM's sleep endpoints. Residency is driven by one replica at a time (the lease
holder): the other never calls `/sleep` or `/wake_up`, and the two experts are never awake
together. Keys, rate limits, the response cache and the request log are shared through Redis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
import yaml
from starlette.requests import Request
from starlette.responses import Response

from experts.testing import FakeExpert

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("COE_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
#: how long a replica may take to exit on SIGTERM before it is killed and the test fails
STOP_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoggedExpert(FakeExpert):
    """A fake vLLM whose sleep and wake calls go to one log shared by all the fakes."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        super().__init__(name, default=f"{name} answers")
        self.log = log

    async def _sleep(self, request: Request) -> Response:
        self.log.append((self.name, "sleep"))
        return await super()._sleep(request)

    async def _wake_up(self, request: Request) -> Response:
        self.log.append((self.name, "wake"))
        return await super()._wake_up(request)


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def chat(self, model: str, content: str = "hi", **extra: object) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=60)


@dataclass
class Cluster:
    replicas: list[Replica]
    fakes: dict[str, LoggedExpert]
    log: list[tuple[str, str]]
    prefix: str

    def holder(self) -> Replica:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            value = client.get(f"{self.prefix}residency:lease")
        finally:
            client.close()
        assert value is not None, "no replica holds the residency lease"
        pid = int(value.decode().split(":")[1])
        [holder] = [r for r in self.replicas if r.process.pid == pid]
        return holder


def _serve_fake(fake: FakeExpert, port: int) -> uvicorn.Server:
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def _start_replica(tmp: Path, pool: Path, prefix: str, index: int) -> Replica:
    port = _free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "COE_POOL": str(pool),
        "COE_WORK_DIR": str(tmp / f"work{index}"),
        "COE_REDIS_URL": REDIS_URL,
        "COE_REDIS_PREFIX": prefix,
        "COE_RESIDENCY_LEASE_S": "2",
        "COE_CACHE": "exact",
        "COE_MAX_WAIT_S": "1",
    }
    log_path = tmp / f"replica{index}.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    return Replica(f"http://127.0.0.1:{port}", process, log_path)


def _wait_healthy(replica: Replica) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert replica.process.poll() is None, replica.log_path.read_text()
        try:
            if httpx.get(f"{replica.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"replica did not start:\n{replica.log_path.read_text()}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(replicas: list[Replica]) -> str | None:
    """SIGTERM every replica and wait, `STOP_S` for all of them; kill those still running.
    Returns the failure (each hung replica's log tail), None when all exited in time: a
    shutdown that hangs fails the test in seconds instead of running into CI's timeout."""
    for replica in replicas:
        replica.process.terminate()
    deadline = time.monotonic() + STOP_S
    hung = []
    for replica in replicas:
        try:
            replica.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()
            hung.append(
                f"replica {replica.url} (pid {replica.process.pid}) had not exited "
                f"{STOP_S:.0f} s after SIGTERM and was killed; the end of {replica.log_path}:\n"
                + _tail(replica.log_path)
            )
    return "\n\n".join(hung) or None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    log: list[tuple[str, str]] = []
    fakes = {name: LoggedExpert(name, log) for name in ("a", "b")}
    servers, experts = [], []
    for price, (name, fake) in enumerate(fakes.items(), start=1):
        port = _free_port()
        servers.append(_serve_fake(fake, port))
        experts.append(
            {
                "name": name,
                "engine": "vllm",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "input_price": price,
                "output_price": price,
                "max_concurrency": 4,
            }
        )
    pool = tmp / "pool.yaml"
    pool.write_text(yaml.safe_dump({"experts": experts, "max_resident": 1}))
    prefix = f"coe:test-replicas-{uuid.uuid4().hex[:8]}:"
    replicas = [_start_replica(tmp, pool, prefix, 0)]
    try:  # from here on every started replica is stopped, whatever fails
        _wait_healthy(replicas[0])  # the first replica takes the lease and sets residency up
        replicas.append(_start_replica(tmp, pool, prefix, 1))
        _wait_healthy(replicas[1])
        yield Cluster(replicas, fakes, log, prefix)
    finally:
        hung = _stop(replicas)
        for server in servers:
            server.should_exit = True
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
        if hung:
            pytest.fail(hung)


def _never_both_awake(log: list[tuple[str, str]]) -> None:
    awake = {"a": True, "b": False}  # the pool's first expert starts resident
    for name, event in log:
        awake[name] = event == "wake"
        assert sum(awake.values()) <= 1, f"both experts awake after {name} {event}: {log}"


def test_only_the_lease_holder_drives_residency(cluster: Cluster) -> None:
    assert cluster.log == [("b", "sleep")], "the second replica touched residency at start"
    holder = cluster.holder()
    [follower] = [r for r in cluster.replicas if r is not holder]

    answer = follower.chat("b")  # asleep: the follower asks the holder to wake it
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "b answers"
    assert cluster.log[1:] == [("a", "sleep"), ("b", "wake")]

    def ask(i: int) -> int:
        replica = cluster.replicas[i % 2]
        return replica.chat("ab"[(i // 2) % 2], content=f"q{i}").status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(ask, range(16)))
    assert statuses == [200] * 16
    _never_both_awake(cluster.log)
    assert cluster.holder() is holder, "the lease changed hands while both replicas lived"

    time.sleep(2.5)  # a coordination round or two: both replicas see the same residency
    views = [httpx.get(f"{r.url}/ready", timeout=5).json()["experts"] for r in cluster.replicas]
    resident = [{n: e["resident"] for n, e in view.items()} for view in views]
    assert resident[0] == resident[1] and sum(resident[0].values()) == 1, resident


def test_cache_and_request_log_are_shared(cluster: Cluster) -> None:
    first, second = cluster.replicas
    body = {"temperature": 0, "max_tokens": 8}
    miss = first.chat("a", content="shared cache?", **body)
    hit = second.chat("a", content="shared cache?", **body)
    assert miss.status_code == hit.status_code == 200
    assert "x-coe-cache" not in miss.headers and hit.headers.get("x-coe-cache") == "exact"
    request_id = miss.headers["x-request-id"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.get(f"{cluster.prefix}req:{request_id}") is not None
    finally:
        client.close()
    summary = httpx.get(f"{second.url}/dashboard/api/summary?window=5m", timeout=10).json()
    assert summary["requests"] >= 2, summary


def test_keys_and_rate_limits_are_shared(cluster: Cluster) -> None:
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "COE_REDIS_URL": REDIS_URL,
        "COE_REDIS_PREFIX": cluster.prefix,
    }
    created = subprocess.run(
        [sys.executable, "-m", "api.cli", "keys", "create", "--name", "shared", "--rpm", "3"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = created.stdout.split()[0]
    auth = {"authorization": f"Bearer {secret}"}
    body = {"model": "a", "messages": [{"role": "user", "content": "limit?"}]}

    def call(replica: Replica) -> int:
        url = f"{replica.url}/v1/chat/completions"
        return httpx.post(url, json=body, headers=auth, timeout=30).status_code

    end = time.monotonic() + 10  # the replicas read keys from Redis (cached for a moment)
    while call(cluster.replicas[1]) == 401 and time.monotonic() < end:
        time.sleep(0.5)
    first, second = cluster.replicas
    statuses = [call(first), call(second), call(first)]  # the loop's call was the first of 3
    assert statuses == [200, 200, 429], statuses
    anonymous = httpx.post(f"{second.url}/v1/chat/completions", json=body, timeout=30)
    assert anonymous.status_code == 401
