"""Residency over `httpx.MockTransport`: vLLM's sleep-mode calls (exact endpoints and order), the
pool file's `max_resident`, and the vLLM launch command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from experts.engines import make_engine
from experts.engines.vllm import VLLMProcessEngine, missing_tool_parser
from experts.errors import ExpertUnavailable, PoolConfigError, ResidencyError
from experts.live import LivePool
from experts.pool import ExpertConfig, PoolConfig, load_pool

ANSWER = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}],
}
BODY = {"messages": [{"role": "user", "content": "2+2?"}]}


class VLLMServers:
    """vLLM servers with sleep mode on hosts `a`, `b`, `c`; every call is recorded."""

    def __init__(self, honour_sleep: bool = True, has_sleep_mode: bool = True) -> None:
        self.sleeping: dict[str, bool] = {}
        self.calls: list[str] = []
        self.honour_sleep = honour_sleep
        self.has_sleep_mode = has_sleep_mode

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        query = f"?{request.url.query.decode()}" if request.url.query else ""
        self.calls.append(f"{request.method} {host}{path}{query}")
        if path in ("/sleep", "/wake_up", "/is_sleeping") and not self.has_sleep_mode:
            return httpx.Response(404, json={"detail": "Not Found"})
        if path == "/sleep":
            self.sleeping[host] = self.honour_sleep
            return httpx.Response(200)
        if path == "/wake_up":
            self.sleeping[host] = False
            return httpx.Response(200)
        if path == "/is_sleeping":
            return httpx.Response(200, json={"is_sleeping": self.sleeping.get(host, False)})
        if path == "/v1/chat/completions":
            assert not self.sleeping.get(host), f"a call reached {host} while it slept"
            return httpx.Response(200, json=ANSWER)
        return httpx.Response(200, json={"data": []})


def vllm_pool(max_resident: int | None = 1, names: str = "ab") -> PoolConfig:
    experts: list[dict[str, Any]] = [
        {"name": n, "engine": "vllm", "base_url": f"http://{n}/v1", "max_concurrency": 2}
        for n in names
    ]
    experts.append({"name": "remote", "engine": "openai", "base_url": "http://remote/v1"})
    return PoolConfig.model_validate({"experts": experts, "max_resident": max_resident})


async def test_vllm_sleep_and_wake_calls_in_order(tmp_path: Path) -> None:
    servers = VLLMServers()
    pool = LivePool(vllm_pool(), tmp_path, transport=httpx.MockTransport(servers))
    await pool.start()
    try:
        # at start: a resident, b put to sleep and checked; the remote expert is not touched
        # (a is asked whether an earlier gateway left it asleep)
        assert servers.calls == ["GET a/is_sleeping", "POST b/sleep?level=1", "GET b/is_sleeping"]
        assert {n: x.resident for n, x in pool.load_board.snapshot().items()} == {
            "a": True,
            "b": False,
            "remote": True,
        }
        servers.calls.clear()
        assert await pool.client.complete("b", BODY) == ANSWER
        assert servers.calls == [
            "POST a/sleep?level=1",
            "GET a/is_sleeping",
            "POST b/wake_up",
            "GET b/is_sleeping",
            "POST b/v1/chat/completions",
        ]
        servers.calls.clear()
        await pool.client.complete("remote", BODY)  # always resident: no switch
        assert servers.calls == ["POST remote/v1/chat/completions"]
        board = pool.load_board.snapshot()
        assert board["b"].loads == 1 and board["a"].loads == 1 and not board["a"].resident
        assert pool.residency.evictions == {"a": 1, "b": 0, "remote": 0}  # start: not counted
        assert not pool.health.is_down("a")  # asleep is not down
        assert (await pool.health.probe(pool.http))["a"] == "asleep"
    finally:
        await pool.stop()


async def test_a_server_left_asleep_by_an_earlier_gateway_is_woken_at_start(
    tmp_path: Path,
) -> None:
    servers = VLLMServers()
    servers.sleeping["a"] = True
    pool = LivePool(vllm_pool(), tmp_path, transport=httpx.MockTransport(servers))
    await pool.start()
    try:
        assert servers.calls[:3] == ["GET a/is_sleeping", "POST a/wake_up", "GET a/is_sleeping"]
        assert await pool.client.complete("a", BODY) == ANSWER
    finally:
        await pool.stop()


async def test_without_max_resident_nothing_sleeps(tmp_path: Path) -> None:
    servers = VLLMServers()
    pool = LivePool(vllm_pool(None), tmp_path, transport=httpx.MockTransport(servers))
    await pool.start()
    try:
        await pool.client.complete("b", BODY)
        await pool.client.complete("a", BODY)
        assert servers.calls == ["POST b/v1/chat/completions", "POST a/v1/chat/completions"]
    finally:
        await pool.stop()


async def test_a_server_without_sleep_mode_is_a_clear_error(tmp_path: Path) -> None:
    for servers, match in (
        (VLLMServers(has_sleep_mode=False), "HTTP 404.*--enable-sleep-mode"),
        (VLLMServers(honour_sleep=False), "not asleep.*VLLM_SERVER_DEV_MODE=1"),
    ):
        pool = LivePool(vllm_pool(), tmp_path, transport=httpx.MockTransport(servers))
        with pytest.raises(ResidencyError, match=match):
            await pool.start()


async def test_a_failed_wake_is_an_unavailable_expert(tmp_path: Path) -> None:
    servers = VLLMServers()
    pool = LivePool(vllm_pool(), tmp_path, transport=httpx.MockTransport(servers))
    await pool.start()
    servers.has_sleep_mode = False  # the server lost its sleep endpoints mid-run
    try:
        with pytest.raises(ExpertUnavailable, match="could not be loaded"):
            await pool.client.complete("b", BODY)
        assert await pool.client.complete("a", BODY) == ANSWER  # a is still resident
    finally:
        await pool.stop()


def test_max_resident_is_validated_with_the_field_named(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    pool: dict[str, Any] = {"experts": [{"name": "a", "engine": "openai", "base_url": "http://a"}]}
    for bad in (0, "two"):
        path.write_text(yaml.safe_dump({**pool, "max_resident": bad}))
        with pytest.raises(PoolConfigError, match=r"pool.yaml: invalid pool file: max_resident"):
            load_pool(path)
    path.write_text(yaml.safe_dump({**pool, "max_resident": 2}))
    assert load_pool(path).max_resident == 2


def test_a_vllm_expert_has_a_base_url_or_a_model_path_not_both(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    both = {"name": "q", "engine": "vllm", "base_url": "http://q/v1", "model_path": "Qwen/Q"}
    for expert, match in ((both, "exactly one of 'base_url'"), ({"name": "q", "engine": "vllm"},
                          "needs 'base_url'.* or 'model_path'")):  # fmt: skip
        path.write_text(yaml.safe_dump({"experts": [expert]}))
        with pytest.raises(PoolConfigError, match=match):
            load_pool(path)


def test_a_launched_vllm_runs_with_sleep_mode_on(tmp_path: Path) -> None:
    config = ExpertConfig(
        name="qwen",
        engine="vllm",
        model_path="Qwen/Qwen2.5-0.5B-Instruct",
        context_length=4096,
        extra_args=["--gpu-memory-utilization", "0.3"],
    )
    engine = make_engine(config, tmp_path)
    assert isinstance(engine, VLLMProcessEngine) and engine.evictable
    command = engine.launch_command(8123)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    assert "--model Qwen/Qwen2.5-0.5B-Instruct --served-model-name qwen" in joined
    assert "--enable-sleep-mode" in command and command[-2:] == ["--gpu-memory-utilization", "0.3"]
    assert engine.launch_env()["VLLM_SERVER_DEV_MODE"] == "1"
    engine.port = 8123
    assert engine.server_root == "http://127.0.0.1:8123"


def test_pool_json_schema_mentions_max_resident() -> None:
    schema = json.dumps(PoolConfig.model_json_schema())
    assert "max_resident" in schema and "model_path" in schema


def test_the_shipped_residency_pool_is_valid() -> None:
    pool = load_pool(Path(__file__).parents[2] / "config" / "local-residency.yaml")
    assert pool.max_resident == 1 and len(pool.experts) == 2


def test_a_launched_vllm_takes_tools_only_with_a_tool_call_parser(tmp_path: Path) -> None:
    base = {"name": "qwen", "engine": "vllm", "model_path": "Qwen/Qwen2.5-0.5B-Instruct"}
    parser = ["--tool-call-parser", "hermes"]
    engine = make_engine(ExpertConfig.model_validate(base | {"extra_args": parser}), tmp_path)
    command = engine.launch_command(8123)
    assert command[-3:] == ["--enable-auto-tool-choice", *parser]
    assert missing_tool_parser(engine.config) is None
    without = ExpertConfig.model_validate(base)
    assert "--enable-auto-tool-choice" not in make_engine(without, tmp_path).launch_command(1)
    assert "tools: false" in (missing_tool_parser(without) or "")
    assert missing_tool_parser(ExpertConfig.model_validate(base | {"tools": False})) is None
