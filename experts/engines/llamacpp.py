"""The local engine: one llama.cpp OpenAI-compatible server process per expert.

The flags follow what was verified on CPU machines (LOCAL_MODELS.md): one thread per process so
that two experts use two cores without oversubscribing them, `--interrupt_requests False` (with
the default, concurrent streams are cut short), and an explicit `--host 127.0.0.1`.

Processes are started with the parent-death signal set, so they end with the gateway even when
it is killed without a chance to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from experts.engines.base import ENGINES, Engine
from experts.errors import EngineStartError
from experts.pool import ExpertConfig
from experts.weights import resolve_gguf

__all__ = ["LlamaCppEngine", "free_port"]

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LlamaCppEngine(Engine):
    """Starts `python -m llama_cpp.server` for a GGUF file on a free loopback port."""

    kind = "llamacpp"
    restartable = True
    start_timeout_s = 120.0

    def __init__(self, config: ExpertConfig, work_dir: Path) -> None:
        super().__init__(config, work_dir)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = work_dir / f"{config.name.replace('/', '_')}.log"

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise EngineStartError(f"{self.config.name}: not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def model_path(self) -> Path:
        if self.config.gguf is not None:
            if not self.config.gguf.is_file():
                raise EngineStartError(
                    f"{self.config.name}: gguf file {self.config.gguf} not found"
                )
            return self.config.gguf
        assert self.config.gguf_package is not None
        return resolve_gguf(self.config.gguf_package, self.work_dir / "weights")

    def command(self, model: Path, port: int) -> list[str]:
        cfg = self.config
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            cfg.served_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(cfg.n_threads),
            "--n_threads_batch",
            str(cfg.n_threads),
            "--n_ctx",
            str(cfg.n_ctx or cfg.context_length),
            "--interrupt_requests",
            "False",
        ]
        if cfg.chat_format:
            cmd += ["--chat_format", cfg.chat_format]
        return cmd + cfg.extra_args

    async def start(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EngineStartError(
                f"{self.config.name}: llama-cpp-python is not installed: "
                "`pip install 'coe[local]'` (or `make run`, which installs it)"
            )
        model = self.model_path()
        self.port = free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # Popen on the event-loop thread: the parent-death signal fires when the *thread*
            # that forked exits, so a worker thread would take the child down with it.
            self.process = subprocess.Popen(  # noqa: ASYNC220  (fast; see above)
                self.command(model, self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise EngineStartError(
                        f"{self.config.name}: llama.cpp server exited at start; "
                        f"last log lines:\n{self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        await self.stop()
        raise EngineStartError(
            f"{self.config.name}: not ready after {self.start_timeout_s:.0f} s; "
            f"log at {self.log_path}"
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        for _ in range(50):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.1)
        process.kill()
        process.wait()


ENGINES["llamacpp"] = LlamaCppEngine
