"""vLLM residency by sleep mode, and vLLM servers that coe launches itself.

Sleep mode (`--enable-sleep-mode`, endpoints enabled by `VLLM_SERVER_DEV_MODE=1`, CUDA/ROCm
only) keeps the server process and moves the weights to CPU memory: waking takes a fraction of a
second instead of a reload. The endpoints sit at the server root, beside `/v1`::

    POST /sleep?level=1    offload weights to CPU, drop the KV cache
    POST /wake_up          weights back on the GPU
    GET  /is_sleeping      {"is_sleeping": true|false}

coe checks `/is_sleeping` after each transition, so a server that ignored the call (started
without sleep mode) is an error that says how to start it, not a silent out-of-memory later.

An expert with `model_path` instead of `base_url` is launched by coe (`pip install coe[vllm]`)::

    - name: qwen
      engine: vllm
      model_path: Qwen/Qwen2.5-7B-Instruct   # or a local folder
      extra_args: [--gpu-memory-utilization, "0.3", --tool-call-parser, hermes]

Tools: a request with `tools` and no `tool_choice` means `auto`, which vLLM refuses (400) unless
its server runs with `--enable-auto-tool-choice` and a `--tool-call-parser` that reads the
model's tool-call markup (hermes for Qwen2.5 and ChatML models, llama3_json for Llama 3.1,
mistral for Mistral). The parser depends on the model, so the pool names it in `extra_args`;
`tool_call_args` adds the switch, for a launched server and for `coe deploy` alike. Without a
parser an expert that takes tools (the default) does not start: name one, or set `tools: false`.
Arguments follow a tool's JSON schema only for a tool marked `strict` (or a server started with
`--tool-strict-level parameter`); otherwise vLLM constrains the call's envelope and name only.
"""

from __future__ import annotations

import importlib.util
import sys

import httpx

from experts.engines.base import Engine
from experts.engines.process import ProcessEngine, inherit_env
from experts.errors import EngineStartError, ResidencyError
from experts.pool import ExpertConfig

__all__ = ["SleepMode", "VLLMProcessEngine", "missing_tool_parser", "tool_call_args"]

SLEEP_HINT = "start vLLM with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1 (CUDA/ROCm only)"
AUTO_TOOL_CHOICE = "--enable-auto-tool-choice"


def _names_parser(args: list[str]) -> bool:
    return any(a == "--tool-call-parser" or a.startswith("--tool-call-parser=") for a in args)


def tool_call_args(config: ExpertConfig) -> list[str]:
    """The vLLM server flags, beyond the pool's `extra_args`, that make the expert take `tools`
    as the pool says: `--enable-auto-tool-choice` when it takes tools and names a parser."""
    args = config.extra_args
    if config.supports_tools and AUTO_TOOL_CHOICE not in args and _names_parser(args):
        return [AUTO_TOOL_CHOICE]
    return []


def missing_tool_parser(config: ExpertConfig) -> str | None:
    """Why the expert's vLLM server could not take the tools the pool says it takes (it names
    no `--tool-call-parser` in `extra_args`, and vLLM would answer 400), with the fix; or None."""
    if not config.supports_tools or _names_parser(config.extra_args):
        return None
    return (
        f"expert {config.name!r} takes tools, but its vLLM server needs a tool-call parser for "
        "that: add one for its model to extra_args (e.g. [--tool-call-parser, hermes] for "
        "Qwen2.5, llama3_json for Llama 3.1, mistral for Mistral), or set tools: false"
    )


class SleepMode(Engine):
    """`sleep` / `wake` through vLLM's sleep-mode endpoints (a mixin for vLLM engines)."""

    evictable = True
    sleep_level = 1

    @property
    def server_root(self) -> str:
        """The server's root URL: `base_url` without its `/v1`."""
        return self.base_url.removesuffix("/").removesuffix("/v1")

    async def _call(self, http: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
        url = f"{self.server_root}{path}"
        try:
            response = await http.request(method, url, headers=self.headers(), timeout=120.0)
        except httpx.HTTPError as exc:
            raise ResidencyError(f"{self.config.name}: {method} {url} failed: {exc!r}") from exc
        if response.status_code != 200:
            hint = f"; {SLEEP_HINT}" if response.status_code == 404 else ""
            raise ResidencyError(
                f"{self.config.name}: {method} {path} answered HTTP {response.status_code}{hint}"
            )
        return response

    async def is_sleeping(self, http: httpx.AsyncClient) -> bool:
        data = (await self._call(http, "GET", "/is_sleeping")).json()
        return bool(data.get("is_sleeping"))

    async def _confirm(self, http: httpx.AsyncClient, sleeping: bool) -> None:
        if await self.is_sleeping(http) != sleeping:
            state = "asleep" if sleeping else "awake"
            raise ResidencyError(f"{self.config.name}: the server is not {state}; {SLEEP_HINT}")

    async def ensure_awake(self, http: httpx.AsyncClient) -> None:
        """A server outlives the gateway: the last one may have left it asleep."""
        if await self.is_sleeping(http):
            await self.wake(http)

    async def sleep(self, http: httpx.AsyncClient) -> None:
        await self._call(http, "POST", f"/sleep?level={self.sleep_level}")
        await self._confirm(http, sleeping=True)

    async def wake(self, http: httpx.AsyncClient) -> None:
        await self._call(http, "POST", "/wake_up")
        await self._confirm(http, sleeping=False)


class VLLMProcessEngine(SleepMode, ProcessEngine):
    """A vLLM OpenAI server that coe starts for `model_path`, with sleep mode on."""

    kind = "vllm"
    server_name = "vLLM server"
    start_timeout_s = 900.0  # a first start compiles kernels and loads weights

    def preflight(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise EngineStartError(
                f"{self.config.name}: vLLM is not installed: `pip install 'coe[vllm]'` "
                "(on a GPU host), or give the expert a 'base_url' of a running server"
            )
        if (why := missing_tool_parser(self.config)) is not None:
            raise EngineStartError(why)

    def launch_command(self, port: int) -> list[str]:
        cfg = self.config
        assert cfg.model_path is not None  # make_engine picks this engine only then
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            cfg.model_path,
            "--served-model-name",
            cfg.served_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            str(cfg.context_length),
            "--enable-sleep-mode",
            *tool_call_args(cfg),
            *cfg.extra_args,
        ]

    def launch_env(self) -> dict[str, str]:
        return inherit_env(VLLM_SERVER_DEV_MODE="1")

    async def start_asleep(self, http: httpx.AsyncClient) -> None:
        """vLLM cannot start asleep: load, then sleep (later wakes are cheap)."""
        await self.start()
        await self.sleep(http)
