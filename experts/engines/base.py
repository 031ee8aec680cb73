"""The engine interface: where an expert's OpenAI-compatible endpoint lives, and its lifecycle."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import httpx

from experts.pool import ExpertConfig

__all__ = ["ENGINES", "Engine", "make_engine"]


class Engine(ABC):
    """Runs (or points at) one expert's server.

    `start` returns once the expert can answer (or at once for an external server, which the
    gateway routes around while it is down); `stop` releases whatever `start` acquired.

    Residency (`experts.residency`): an `evictable` engine can leave memory with `sleep` and
    come back with `wake`; while it sleeps `asleep` is true, and it is neither down nor
    restarted by the supervisor. Engines that are not evictable are always resident.
    """

    kind: str
    #: True when coe runs the expert's process itself and can start it again after a crash.
    restartable: bool = False
    #: True when the expert can be put to sleep (evicted) and woken by coe.
    evictable: bool = False

    def __init__(self, config: ExpertConfig, work_dir: Path) -> None:
        self.config = config
        self.work_dir = work_dir
        self.asleep = False

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The expert's OpenAI API root, ending in `/v1`."""

    def headers(self) -> dict[str, str]:
        """Headers to send with every call (auth for remote endpoints)."""
        return {}

    def prepare(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI request body as this engine's server accepts it (a server that reads a
        documented field another way gets it in its own form; the default changes nothing)."""
        return payload

    async def start(self) -> None:  # noqa: B027  (no-op for servers that already run)
        """Make the expert ready to serve."""

    async def stop(self) -> None:  # noqa: B027
        """Release the expert's resources."""

    def alive(self) -> bool:
        """False when coe knows the expert cannot answer (its process exited)."""
        return True

    async def sleep(self, http: httpx.AsyncClient) -> None:
        """Release the expert's memory so that another can be resident (evictable engines)."""
        raise NotImplementedError(f"{self.kind} experts are always resident")

    async def wake(self, http: httpx.AsyncClient) -> None:
        """Bring a sleeping expert back so it answers (evictable engines)."""
        raise NotImplementedError(f"{self.kind} experts are always resident")

    async def ensure_awake(self, http: httpx.AsyncClient) -> None:  # noqa: B027
        """After `start`, wake a server that a previous gateway left asleep (vLLM)."""

    async def start_asleep(self, http: httpx.AsyncClient) -> None:
        """Start in the evicted state: by default start, then sleep."""
        await self.start()
        await self.sleep(http)


ENGINES: dict[str, type[Engine]] = {}


def make_engine(config: ExpertConfig, work_dir: Path) -> Engine:
    if config.engine == "vllm" and config.model_path is not None:
        from experts.engines.vllm import VLLMProcessEngine  # a server coe launches itself

        return VLLMProcessEngine(config, work_dir)
    if config.engine == "llamacpp" and config.base_url is not None:
        # served elsewhere (its own container: `coe deploy expert`): coe only calls it
        return ENGINES["openai"](config, work_dir)
    return ENGINES[config.engine](config, work_dir)
