"""Engines for servers that run outside coe: vLLM and any OpenAI-compatible endpoint."""

from __future__ import annotations

import os

from experts.engines.base import ENGINES, Engine

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


class VLLMEngine(_RemoteEngine):
    """A vLLM OpenAI server (`vllm serve` / `vllm.entrypoints.openai.api_server`)."""

    kind = "vllm"


class OpenAIEngine(_RemoteEngine):
    """Any remote OpenAI-compatible endpoint; always resident."""

    kind = "openai"


ENGINES["vllm"] = VLLMEngine
ENGINES["openai"] = OpenAIEngine
