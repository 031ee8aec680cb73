"""Engines for servers that run outside coe: vLLM and any OpenAI-compatible endpoint."""

from __future__ import annotations

import os

from experts.engines.base import ENGINES, Engine
from experts.engines.vllm import SleepMode
from experts.errors import EngineStartError

__all__ = ["OpenAIEngine", "VLLMEngine"]


class _RemoteEngine(Engine):
    @property
    def base_url(self) -> str:
        assert self.config.base_url is not None  # the pool validator guarantees it
        return self.config.base_url.rstrip("/")

    def headers(self) -> dict[str, str]:
        if self.config.api_key_env and (key := os.environ.get(self.config.api_key_env)):
            return {"Authorization": f"Bearer {key}"}
        return {}

    async def start(self) -> None:
        """Nothing to start; but a key the pool names and the environment lacks is bad config."""
        if self.config.api_key_env and not os.environ.get(self.config.api_key_env):
            raise EngineStartError(
                f"expert {self.config.name!r}: api_key_env names {self.config.api_key_env}, "
                "which is not set in the environment"
            )


class VLLMEngine(SleepMode, _RemoteEngine):
    """A vLLM OpenAI server (`vllm serve` / `vllm.entrypoints.openai.api_server`).

    Evictable by sleep mode when the pool sets `max_resident` (see `experts.engines.vllm`).
    """

    kind = "vllm"


class OpenAIEngine(_RemoteEngine):
    """Any remote OpenAI-compatible endpoint; always resident."""

    kind = "openai"


ENGINES["vllm"] = VLLMEngine
ENGINES["openai"] = OpenAIEngine
