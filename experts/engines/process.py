"""Engines whose server coe runs itself: one child process on a free loopback port.

Shared by `llamacpp` and launched `vllm` experts: spawn, wait until `/v1/models` answers, stop.
Processes are started with the parent-death signal set, so they end with the gateway even when
it is killed without a chance to clean up. Stopping and starting again is also how such an
expert is evicted and made resident (`sleep` / `wake`), unless the engine has a cheaper way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from abc import abstractmethod
from pathlib import Path

import httpx

from experts.engines.base import Engine
from experts.errors import EngineStartError
from experts.pool import ExpertConfig

__all__ = ["ProcessEngine", "free_port"]

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


class ProcessEngine(Engine):
    """An expert server run as a child process; subclasses say which command and environment."""

    restartable = True
    evictable = True
    start_timeout_s = 120.0
    server_name = "server"

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

    @abstractmethod
    def launch_command(self, port: int) -> list[str]:
        """The argv that serves this expert on 127.0.0.1:`port`."""

    def launch_env(self) -> dict[str, str] | None:
        """The child's environment (None: inherit the gateway's)."""
        return None

    def preflight(self) -> None:
        """Raise `EngineStartError` when the expert could not start (missing package or file)."""

    async def start(self) -> None:
        self.preflight()
        # a restart keeps the port: whoever holds the URL (a worker process) still reaches it
        command = self.launch_command(port := self.port or free_port())
        self.port = port
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Popen on the event-loop thread: the parent-death signal fires when the *thread*
            # that forked exits, so a worker thread would take the child down with it.
            self.process = subprocess.Popen(  # noqa: ASYNC220  (fast; see above)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                env=self.launch_env(),
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise EngineStartError(
                        f"{self.config.name}: {self.server_name} exited at start; "
                        f"last log lines:\n{self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
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
        for _ in range(100):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        process.kill()
        process.wait()

    async def sleep(self, http: httpx.AsyncClient) -> None:
        """Evict by ending the process: its memory goes back to the machine."""
        await self.stop()

    async def wake(self, http: httpx.AsyncClient) -> None:
        """Make resident by starting the process again (a real load of the weights)."""
        await self.start()

    async def start_asleep(self, http: httpx.AsyncClient) -> None:
        """Check the expert could start, without loading it."""
        self.preflight()


def inherit_env(**extra: str) -> dict[str, str]:
    """The gateway's environment plus `extra`."""
    return {**os.environ, **extra}
