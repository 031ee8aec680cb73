"""`coe deploy expert`: serve one llama.cpp expert of a pool, in the foreground, where the pool's
`base_url` says it listens. Each expert container of the CPU stack runs this.

It builds the very command the gateway's `llamacpp` engine runs (same weights resolution, same
flags), so a container serves what a `make run` gateway would serve itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from deploy.topology import DeployError
from experts.engines.llamacpp import LlamaCppEngine
from experts.pool import PoolConfig

__all__ = ["expert_command"]


def expert_command(pool: PoolConfig, name: str, work_dir: Path, host: str | None) -> list[str]:
    """The argv serving expert `name` on its base_url's port (and host, unless `host` is given).

    Raises `DeployError` when the pool has no such llama.cpp expert or it has no base_url.
    """
    experts = {e.name: e for e in pool.experts}
    expert = experts.get(name)
    if expert is None:
        raise DeployError(f"no expert {name!r} in the pool; it has {sorted(experts)}")
    if expert.engine != "llamacpp" or expert.base_url is None:
        raise DeployError(
            f"expert {name!r} is not a llama.cpp expert with a base_url: `coe deploy expert` "
            "serves those; vLLM experts run in vLLM's own image"
        )
    url = urlsplit(expert.base_url)
    engine = LlamaCppEngine(expert, work_dir)
    engine.preflight()  # resolves (and for split packages assembles) the weights once
    argv = engine.launch_command(url.port or 80)
    argv[argv.index("--host") + 1] = host or url.hostname or "127.0.0.1"
    return argv


def exec_expert(argv: list[str]) -> None:
    """Replace this process by the server, so that the container's signals reach it."""
    os.execv(argv[0], argv)
