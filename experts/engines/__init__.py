"""How an expert runs: `vllm` and `openai` servers that exist, `llamacpp` servers coe starts."""

from experts.engines.base import ENGINES, Engine, make_engine
from experts.engines.llamacpp import LlamaCppEngine
from experts.engines.remote import OpenAIEngine, VLLMEngine

__all__ = ["ENGINES", "Engine", "LlamaCppEngine", "OpenAIEngine", "VLLMEngine", "make_engine"]
