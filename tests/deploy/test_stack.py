"""The CPU stack, for real: `deploy/cpu/docker-compose.yml` up in docker, used with the openai
client, one expert stopped, and torn down without a trace.

Run by `make compose-test` (which builds the images first: deploy/docker/build.sh), outside
the default test run (marker `docker`). Everything runs on the host network on 127.0.0.1, on
ports clear of 8000 and the tests' range; the experts' ports are config/cpu.yaml's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from openai import OpenAI

from experts.pool import load_pool

pytestmark = [pytest.mark.docker, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "cpu" / "docker-compose.yml"
PROJECT = "coe-stack-test"
PORTS = {"COE_PORT": 28180, "COE_REDIS_PORT": 28179, "PROMETHEUS_PORT": 28190}
GATEWAY = f"http://127.0.0.1:{PORTS['COE_PORT']}"
CHEAP, OTHER = "smollm2-135m", "gemma3-270m"  # config/cpu.yaml: coe-auto picks the cheapest


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]  # the v2 plugin, where it is installed


def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    argv = [*_compose_command(), "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    env = os.environ | {k: str(v) for k, v in PORTS.items()}
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _left_over() -> dict[str, str]:
    """The project's containers, networks and volumes that docker still has."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = {}
    for kind in ("container", "network", "volume"):
        extra = ["-a"] if kind == "container" else []
        out = subprocess.run(
            ["docker", kind, "ls", *extra, "-q", "--filter", label],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if out:
            found[kind] = out
    return found


def _wait_ready(deadline_s: float) -> httpx.Response:
    end = time.monotonic() + deadline_s
    last: httpx.Response | Exception | None = None
    while time.monotonic() < end:
        try:
            last = httpx.get(f"{GATEWAY}/ready", timeout=5)
            if last.status_code == 200:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"the gateway was not ready in {deadline_s} s: {last!r}")


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: run `make compose-test` (it installs it)")
    compose("down", "-v", "--remove-orphans", "--timeout", "5")  # a crashed run's leftovers
    pool_ports = [
        urlsplit(e.base_url or "").port for e in load_pool(ROOT / "config/cpu.yaml").experts
    ]
    busy = [p for p in [*PORTS.values(), *pool_ports] if p and not _port_free(p)]
    assert not busy, f"ports {busy} are taken on 127.0.0.1; the stack needs them"
    started = time.monotonic()
    up = compose("up", "-d", "--no-build")
    try:
        assert up.returncode == 0, f"compose up failed:\n{up.stdout}\n{up.stderr}"
        _wait_ready(180)
        print(f"\nstack up and ready in {time.monotonic() - started:.1f} s")
        yield
    finally:
        if up.returncode != 0 or os.environ.get("COE_STACK_LOGS"):
            print(compose("logs", "--no-color", "--tail", "50").stdout)
        down = compose("down", "-v", "--remove-orphans", "--timeout", "10")
        assert down.returncode == 0, f"compose down failed:\n{down.stderr}"


def _client() -> OpenAI:
    return OpenAI(base_url=f"{GATEWAY}/v1", api_key="unused", timeout=120, max_retries=0)


def test_openai_client_gets_answers_from_coe_auto(stack: None) -> None:
    client = _client()
    raw = client.chat.completions.with_raw_response.create(
        model="coe-auto",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
    )
    answer = raw.parse()
    assert answer.choices[0].message.content, "an empty answer"
    coe = answer.model_extra["coe"]
    assert coe["experts"] == [CHEAP] and coe["usage"]["completion_tokens"] > 0

    chunks = list(
        client.chat.completions.create(
            model="coe-auto",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), "the stream carried no text"
    assert chunks[-1].model_extra["coe"]["experts"] == [CHEAP]

    # the request log is in the stack's Redis: the id the gateway answered with indexes it
    request_id = raw.headers["x-request-id"]
    store = redis.Redis(port=PORTS["COE_REDIS_PORT"])
    try:
        entry_id = store.get(f"coe:req:{request_id}")
        assert entry_id is not None, f"Redis holds no request log entry for {request_id}"
        [(_, fields)] = store.xrange("coe:requests", entry_id, entry_id)
    finally:
        store.close()
    logged = json.loads(fields[b"r"])
    assert logged["request_id"] == request_id and logged["experts"] == [CHEAP]


def test_ready_and_metrics_report_both_experts(stack: None) -> None:
    ready = httpx.get(f"{GATEWAY}/ready", timeout=10).json()
    assert {n: e["status"] for n, e in ready["experts"].items()} == {CHEAP: "ok", OTHER: "ok"}
    assert ready["store"]["backend"] == "redis", ready["store"]
    metrics = httpx.get(f"{GATEWAY}/metrics", timeout=10).text
    assert "coe_requests_total" in metrics


def test_prometheus_scrapes_the_gateway(stack: None) -> None:
    url = f"http://127.0.0.1:{PORTS['PROMETHEUS_PORT']}/api/v1/query?query=up"
    end, result = time.monotonic() + 60, []
    while time.monotonic() < end:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
        if result and result[0]["value"][1] == "1":
            break
        time.sleep(3)
    assert result and result[0]["metric"]["job"] == "coe-gateway", result
    assert result[0]["value"][1] == "1", f"Prometheus cannot scrape the gateway: {result}"


def test_a_stopped_expert_is_routed_around(stack: None) -> None:
    service = "expert-" + CHEAP
    stopped = compose("stop", "--timeout", "5", service)
    assert stopped.returncode == 0, stopped.stderr
    try:
        answer = _client().chat.completions.create(
            model="coe-auto",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=12,
        )
        assert answer.model_extra["coe"]["experts"] == [OTHER]
    finally:
        compose("start", service)


def test_teardown_leaves_nothing(stack: None) -> None:
    """Runs last in this module: the stack goes down here and nothing of it may remain."""
    down = compose("down", "-v", "--remove-orphans", "--timeout", "10")
    assert down.returncode == 0, down.stderr
    assert not _left_over(), f"left behind after down: {_left_over()}"
