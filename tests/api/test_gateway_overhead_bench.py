"""`benchmarks/gateway_overhead.py`'s native fake expert answers the Python fake's own bytes, and
`COE_LOOP` reaches uvicorn (the loop the 64-client tail depends on)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app

POOL = "experts:\n  - {name: remote, engine: openai, base_url: 'http://a/v1', max_concurrency: 8}\n"


def _bench() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "gateway_overhead.py"
    spec = importlib.util.spec_from_file_location("gateway_overhead_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_nginx_string_escapes_what_nginx_would_read_and_refuses_variables() -> None:
    bench = _bench()
    assert bench._nginx_string(b"it's a\\b\nc") == "it\\'s a\\\\b\\nc"
    with pytest.raises(ValueError, match=r"\$"):
        bench._nginx_string(b'{"price": "$1"}')


def test_the_fakes_answers_are_a_completion_and_a_stream_with_usage() -> None:
    whole, events = _bench()._fake_answers()
    answer = json.loads(whole)
    assert answer["choices"][0]["message"]["content"] == "The answer to your question is four."
    lines = [line for line in events.decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 7


def test_route_modes_ask_the_routing_decision() -> None:
    bench = _bench()
    assert bench._path("route") == bench._path("route httpx") == "/route"
    assert bench._path("json") == bench._path("idle 10ms") == "/chat/completions"


def test_auto_takes_nginx_only_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    assert bench._fake_kind("auto") == "python"
    with pytest.raises(SystemExit, match="nginx"):
        bench._fake_kind("native")
    monkeypatch.setattr(bench.shutil, "which", lambda name: f"/usr/sbin/{name}")
    assert bench._fake_kind("auto") == "native"
    assert bench._fake_kind("python") == "python"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_native_fake_answers_byte_for_byte_what_the_python_fake_does(tmp_path: Path) -> None:
    bench = _bench()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    whole, events = bench._fake_answers()
    proc = subprocess.Popen(bench._fake_argv("native", port, tmp_path))
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 20
        while True:
            try:
                models = httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert models.json()["data"][0]["id"] == bench.EXPERT
        with httpx.Client(base_url=url) as client:
            # what coe sends: compact JSON; a stream asks for usage
            plain = client.post("/chat/completions", content=b'{"model":"fake","messages":[]}')
            streamed = client.post(
                "/chat/completions",
                content=b'{"model":"fake","messages":[],"stream":true,'
                b'"stream_options":{"include_usage":true}}',
            )
        assert (plain.status_code, plain.content) == (200, whole)
        assert plain.headers["content-type"] == "application/json"
        assert (streamed.status_code, streamed.content) == (200, events)
        assert streamed.headers["content-type"] == "text/event-stream"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_uvicorn_on_the_configured_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    import uvicorn

    import api.workers

    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(kwargs))
    monkeypatch.setattr(api.workers, "check_workers", lambda *args: None)
    for name in ("COE_POOL", "COE_WORK_DIR"):  # `serve_workers` sets them for its workers
        monkeypatch.setenv(name, "unset by the test")
    env = {"COE_LOOP": "asyncio", "COE_WORK_DIR": str(tmp_path / "work"), "COE_REDIS_URL": ""}
    result = CliRunner().invoke(
        app, ["serve", "--pool", str(pool), "--workers", str(workers)], env=env
    )
    assert result.exit_code == 0, result.output
    assert [run["loop"] for run in runs] == ["asyncio"]
    assert runs[0].get("workers", 1) == workers
