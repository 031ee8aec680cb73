"""Residency for real: `coe serve` with two llama.cpp experts and `max_resident: 1`. The gateway
stops one expert's process and starts the other while requests to both are in flight; none may
fail, and at no moment do both processes run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from experts.engines.llamacpp import free_port
from tests.api.test_integration_llamacpp import children, cmdline, needs_llamacpp, smol

pytestmark = pytest.mark.integration

ASK = [{"role": "user", "content": "Say hello."}]


def llama_children(pid: int) -> list[str]:
    return [c for p in children(pid) if "llama_cpp.server" in (c := cmdline(p))]


@needs_llamacpp
def test_experts_are_stopped_and_started_under_load(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        yaml.safe_dump({"experts": [smol("a", 0.01), smol("b", 0.02)], "max_resident": 1})
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COE_WORK_DIR": str(tmp_path / "work"), "COE_MAX_WAIT_S": "2"}
    with (tmp_path / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--pool", str(pool), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "gateway not ready in 90 s"
            try:
                ready = httpx.get(f"{url}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        experts = ready.json()["experts"]
        assert experts["a"]["resident"] and experts["b"]["status"] == "asleep"
        assert len(llama_children(gateway.pid)) == 1

        peak = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, len(llama_children(gateway.pid)))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()

        def ask(model: str, stream: bool) -> tuple[str, int, str]:
            body = {"model": model, "messages": ASK, "max_tokens": 3, "stream": stream}
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            return model, r.status_code, r.text

        jobs = [("a" if i % 2 else "b", i % 3 == 0) for i in range(12)]
        with ThreadPoolExecutor(max_workers=6) as pool_:
            results = list(pool_.map(lambda j: ask(*j), jobs))
        stop.set()
        watcher.join()

        assert [(m, s) for m, s, _ in results] == [(m, 200) for m, _ in jobs], results
        failed = [  # a stream that broke mid-answer has an error event; an answer has choices
            text
            for _, _, text in results
            if 'data: {"error"' in text or not ("[DONE]" in text or '"choices":[{' in text)
        ]
        assert not failed, failed
        assert peak == 1  # never both processes at once
        after = httpx.get(f"{url}/ready", timeout=5).json()["experts"]
        assert after["b"]["loads"] >= 1 and after["a"]["loads"] + after["b"]["loads"] >= 2
        assert after["a"]["in_flight"] == after["b"]["in_flight"] == 0
        assert after["a"]["queued"] == after["b"]["queued"] == 0
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
