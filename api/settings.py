"""Service settings, read once at start from `COE_*` environment variables (and `.env`).

Every setting is a field here; nothing else in coe reads the environment for configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
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
