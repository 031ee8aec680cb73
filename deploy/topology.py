"""What a pool file asks to be deployed: one service per expert that is not remote.

An expert becomes a service when its `base_url` names where it will run: a `vllm` expert
(`http://vllm-qwen:8000/v1` → service `vllm-qwen` on port 8000), or a `llamacpp` expert with a
`base_url` (served by `coe deploy expert` in its own container). `openai` experts are remote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from experts.engines.vllm import missing_tool_parser
from experts.pool import ExpertConfig, PoolConfig

__all__ = ["LOOPBACK", "DeployError", "ExpertService", "expert_services", "uses_host_network"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class DeployError(ValueError):
    """The pool cannot be deployed as asked; the message says what to change."""


@dataclass(frozen=True)
class ExpertService:
    """One expert's server as a deployment unit: its service name (the base_url's host, or
    `expert-NAME` on the host network), the port it listens on, and the expert it serves."""

    name: str
    port: int
    expert: ExpertConfig

    @property
    def engine(self) -> str:
        return self.expert.engine


def _service_name(expert: ExpertConfig, host: str) -> str:
    if host in LOOPBACK:
        return "expert-" + re.sub(r"[^a-z0-9-]+", "-", expert.name.lower()).strip("-")
    return host


def expert_services(pool: PoolConfig) -> list[ExpertService]:
    """The pool's experts that a deployment runs, in pool order.

    Raises `DeployError` for an expert that coe starts itself (no `base_url`): a deployment
    runs each expert in its own container, so the pool must say where each one listens; and for
    a vLLM expert that takes tools but names no tool-call parser (`experts.engines.vllm`).
    """
    services: list[ExpertService] = []
    for expert in pool.experts:
        if expert.engine == "openai":
            continue
        if expert.base_url is None:
            raise DeployError(
                f"expert {expert.name!r} has no base_url: a deployment runs each expert in its "
                "own container; give it `base_url: http://HOST:PORT/v1` (where it will listen)"
            )
        url = urlsplit(expert.base_url)
        if url.hostname is None:
            raise DeployError(f"expert {expert.name!r}: base_url {expert.base_url!r} has no host")
        if expert.engine == "vllm" and (why := missing_tool_parser(expert)) is not None:
            raise DeployError(why)  # its container's vLLM would answer 400 to tools
        port = url.port or (443 if url.scheme == "https" else 80)
        services.append(ExpertService(_service_name(expert, url.hostname), port, expert))
    names = [s.name for s in services]
    for name in names:
        if names.count(name) > 1:
            raise DeployError(f"two experts would be served by the one service {name!r}")
    return services


def uses_host_network(pool: PoolConfig) -> bool:
    """True when the experts listen on loopback: the stack then runs on the host network.

    Raises `DeployError` for a pool that mixes loopback and service hosts."""
    hosts = {urlsplit(s.expert.base_url or "").hostname in LOOPBACK for s in expert_services(pool)}
    if len(hosts) > 1:
        raise DeployError(
            "the pool mixes experts on 127.0.0.1 with experts on service hosts: use one or the "
            "other (loopback for a one-machine stack, service names for a networked one)"
        )
    return hosts == {True}
