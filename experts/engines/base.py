"""The engine interface: where an expert's OpenAI-compatible endpoint lives, and its lifecycle."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from experts.pool import ExpertConfig

__all__ = ["ENGINES", "Engine", "make_engine"]


class Engine(ABC):
    """Runs (or points at) one expert's server.

    `start` returns once the expert can answer (or at once for an external server, which the
    gateway routes around while it is down); `stop` releases whatever `start` acquired.
    """

    kind: str
    #: True when coe runs the expert's process itself and can start it again after a crash.
    restartable: bool = False

    def __init__(self, config: ExpertConfig, work_dir: Path) -> None:
        self.config = config
        self.work_dir = work_dir

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The expert's OpenAI API root, ending in `/v1`."""

    def headers(self) -> dict[str, str]:
        """Headers to send with every call (auth for remote endpoints)."""
        return {}

    async def start(self) -> None:  # noqa: B027  (no-op for servers that already run)
        """Make the expert ready to serve."""

    async def stop(self) -> None:  # noqa: B027
        """Release the expert's resources."""

    def alive(self) -> bool:
        """False when coe knows the expert cannot answer (its process exited)."""
        return True


ENGINES: dict[str, type[Engine]] = {}


def make_engine(config: ExpertConfig, work_dir: Path) -> Engine:
    return ENGINES[config.engine](config, work_dir)
