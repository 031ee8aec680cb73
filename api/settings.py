"""Service settings, read once at start from `COE_*` environment variables (and `.env`).

Every setting is a field here; nothing else in coe reads the environment for configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """The gateway's settings. `COE_POOL=config/vllm.yaml coe serve` overrides `pool`, etc."""

    model_config = SettingsConfigDict(env_prefix="COE_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    pool: Path = Path("config/local.yaml")
    work_dir: Path = Field(
        default=Path(".coe"), description="logs of local experts and assembled weights"
    )

    router: str | None = Field(
        default=None, description="router for coe-auto; overrides the pool file's router.name"
    )
    router_artifact: Path | None = Field(
        default=None, description="a trained router written by `coe train`"
    )
    cost_weight: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="default quality/cost trade-off; overrides the pool file's"
    )

    embedder: Literal["minilm", "minilm-onnx", "minilm-onnx-int8"] | None = Field(
        default=None,
        description="how the routing query is embedded: MiniLM on torch, or on ONNX Runtime "
        "(fp32 or int8; exported once into work_dir/models). Unset: the embedder the router "
        "artifact was trained with, else minilm; one that differs from the artifact's is refused",
    )

    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    unhealthy_cooldown_s: Annotated[float, Field(ge=0)] = 10.0
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    default_max_tokens: Annotated[int, Field(gt=0)] = 512
    expected_completion_tokens: Annotated[int, Field(gt=0)] = Field(
        default=256, description="completion length assumed when estimating cost before a call"
    )
    request_log_max: Annotated[int, Field(gt=0)] = Field(
        default=100_000, description="requests kept in the request log (the oldest go first)"
    )
    log_prompts: bool = Field(
        default=False, description="record prompts and answers in the request log"
    )
    log_level: str = "info"
    access_log: bool = Field(
        default=False,
        description="uvicorn's line per request (the request log already records every one; "
        "the line cost ~0.1 ms of CPU per request under load)",
    )
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=40.0,
        description="longest each shutdown step may take (stopping a background task, closing "
        "the store, the experts, a client) before shutdown logs an error and goes on",
    )
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="the event loop `coe serve` runs on (uvicorn's `loop`): auto is uvloop "
        "when installed. See the README's Performance section on the 64-client tail",
    )

    # Shared state (api/store): Redis when set, else in-process. See the README's "Keys,
    # limits, cache, metrics and Redis".
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db shared by replicas; unset: in-process"
    )
    redis_prefix: str = Field(default="coe:", description="prefix of every key coe writes")
    redis_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="per Redis command; past it the request is served from memory"
    )
    redis_connect_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="per new Redis connection; past it Redis counts as unreachable"
    )
    redis_max_connections: Annotated[int, Field(ge=1)] = Field(
        default=64, description="Redis connections per gateway; a burst beyond waits its turn"
    )
    redis_pool_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="longest a Redis call waits for a free connection"
    )
    redis_retry_s: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="how often an unreachable Redis is pinged to go back to it"
    )
    request_log_retention_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="on Redis: keep the log by age instead of request_log_max"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{url!r} is not a Redis URL: use redis://host:6379/0")
        return url or None

    cache: Literal["off", "exact", "semantic"] = Field(
        default="off", description="response cache: exact request match, or also similar queries"
    )
    cache_ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    cache_shared: bool = Field(
        default=False, description="serve one key's cached answers to every key (else per key)"
    )
    cache_similarity: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.95, description="semantic cache: least cosine similarity of the last user turn"
    )
    cache_any_temperature: bool = Field(
        default=False, description="also cache requests that sample (temperature unset or > 0)"
    )
    cache_max_entries: Annotated[int, Field(gt=0)] = Field(
        default=10_000, description="in-process cache size; semantic candidates per namespace"
    )
    reports_dir: Path | None = Field(
        default=None, description="folder of `coe eval` reports shown on the dashboard"
    )
    dashboard_refresh_s: Annotated[float, Field(ge=1)] = Field(
        default=5.0, description="how often the dashboard page polls for new figures"
    )
    # residency and batching (experts/scheduler.py); the pool file sets max_resident
    max_wait_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="longest a call waits for an asleep expert before a switch is forced",
    )
    max_queue: Annotated[int, Field(ge=1)] = Field(
        default=512, description="calls that may wait per expert; past it they are shed (503)"
    )
    queue_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="longest a call waits for its expert before it is shed (503)"
    )
    stream_deadline_s: Annotated[float, Field(gt=0)] = Field(
        default=900.0, description="longest a streamed answer may take, slow readers included"
    )
    scheduling: Literal["grouped", "fcfs"] = Field(
        default="grouped",
        description="grouped: each wake serves a batch; fcfs: switch in arrival order",
    )
    residency_lease_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="replicas on Redis: how long the residency lease outlives its last renewal",
    )
    load_tolerance: Annotated[float, Field(ge=0)] = Field(
        default=0.05,
        description="utility coe-auto may give up to avoid a saturated or asleep expert",
    )
    exploration_max: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.05, description="most often a learning router explores instead of exploiting"
    )
    feedback_learning_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.05, description="step size of a learning router's update per feedback"
    )
    compose_strategy: Literal["aggregate", "moa", "select", "vote"] = Field(
        default="aggregate", description="coe-compose's strategy when a request names none"
    )
    compose_k: Annotated[int, Field(ge=1, le=16)] = Field(
        default=3, description="experts coe-compose recruits when a request sets no coe.k"
    )
    compose_layers: Annotated[int, Field(ge=1, le=8)] = Field(
        default=2, description="rounds of proposers for the moa strategy"
    )
    compose_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0, description="deadline for a whole composition (all its expert calls)"
    )
    stickiness: Annotated[float, Field(ge=0)] = Field(
        default=0.05,
        description="coe-auto keeps a conversation's expert unless switching gains more utility",
    )
    sticky_ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=86_400.0, description="how long a conversation's expert is remembered"
    )
    # OpenTelemetry traces (api/tracing.py): the SDK's own variables, not COE_* ones. Tracing is
    # on when an exporter is named (otlp, console) or an OTLP endpoint is set; the SDK reads the
    # rest of its OTEL_* variables (headers, protocol, sampler) itself.
    otel_traces_exporter: str | None = Field(
        default=None, validation_alias=AliasChoices("otel_traces_exporter", "OTEL_TRACES_EXPORTER")
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "otel_exporter_otlp_endpoint",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
    )
    otel_service_name: str = Field(
        default="coe", validation_alias=AliasChoices("otel_service_name", "OTEL_SERVICE_NAME")
    )
