"""The local engine: one llama.cpp OpenAI-compatible server process per expert.

The flags follow what was verified on CPU machines (LOCAL_MODELS.md): one thread per process so
that two experts use two cores without oversubscribing them, `--interrupt_requests False` (with
the default, concurrent streams are cut short), and an explicit `--host 127.0.0.1`.

Residency: evicting a llama.cpp expert ends its process and making it resident starts it again,
a real load of the GGUF file (about a second for the small local models).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from experts.engines.base import ENGINES
from experts.engines.process import ProcessEngine, free_port
from experts.errors import EngineStartError
from experts.weights import resolve_gguf

__all__ = ["LlamaCppEngine", "free_port"]


class LlamaCppEngine(ProcessEngine):
    """Starts `python -m llama_cpp.server` for a GGUF file on a free loopback port."""

    kind = "llamacpp"
    server_name = "llama.cpp server"
    _model: Path | None = None

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
        if "embeddings" in cfg.served_endpoints:
            cmd += ["--embedding", "True"]  # the pool lists /v1/embeddings for it
        return cmd + cfg.extra_args

    def prepare(self, payload: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's forms that llama-cpp-python reads its own way: an assistant turn that only
        calls tools gets `content: ""` (its server rejects null and its templates read the
        field), and `response_format` `json_schema` becomes its `json_object` + `schema`."""
        messages = payload.get("messages")
        if isinstance(messages, list) and any(
            m.get("role") == "assistant" and m.get("content") is None for m in messages
        ):
            payload["messages"] = [
                {**m, "content": ""}
                if m.get("role") == "assistant" and m.get("content") is None
                else m
                for m in messages
            ]
        fmt = payload.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            payload["response_format"] = {"type": "json_object", "schema": schema or {}}
        return payload

    def preflight(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EngineStartError(
                f"{self.config.name}: llama-cpp-python is not installed: "
                "`pip install 'coe[local]'` (or `make run`, which installs it)"
            )
        if self._model is None:  # resolved once: assembling a packaged file takes seconds
            self._model = self.model_path()

    def launch_command(self, port: int) -> list[str]:
        return self.command(self._model or self.model_path(), port)


ENGINES["llamacpp"] = LlamaCppEngine
