"""`coe deploy compose`: a docker-compose stack rendered from a pool file.

Two shapes, chosen by where the pool's experts listen (`deploy.topology`):

- **host network** (experts on 127.0.0.1, e.g. `config/cpu.yaml`): the CPU stack. Redis, one
  container per llama.cpp expert (`coe deploy expert`), the gateway and Prometheus, all on the
  host network, from images built locally (`deploy/docker/build.sh`). Ports the pool does not
  fix come from the environment: `COE_PORT` (8000), `COE_REDIS_PORT` (6379),
  `PROMETHEUS_PORT` (9090). Grafana (`deploy.monitoring`) is behind the profile `grafana`.
- **service network** (experts on service hosts, e.g. `config/vllm.yaml`): the GPU host. One
  vLLM container per expert with a GPU reservation and sleep mode, started one after another,
  with Redis, the gateway, Prometheus and Grafana (the coe dashboard provisioned) from public
  images.

Every service has a healthcheck; the gateway waits for the others to be healthy. The pool file
is mounted into every coe container, so what the gateway calls is what the stack runs.

Example::

    files = render_compose(Path("config/cpu.yaml"), Path("deploy/cpu"))
    write_files(files)   # deploy/cpu/docker-compose.yml, deploy/cpu/prometheus.yml
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from deploy.monitoring import GRAFANA_DIR, grafana_service
from deploy.topology import ExpertService, expert_services, uses_host_network
from experts.engines.vllm import tool_call_args
from experts.pool import PoolConfig, load_pool

__all__ = ["POOL_IN_CONTAINER", "VLLM_IMAGE", "dump", "render_compose", "write_files"]

POOL_IN_CONTAINER = "/etc/coe/pool.yaml"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
#: the share of one GPU all vLLM experts of a host take together (each gets an equal part)
GPU_SHARE = 0.9
ROOT = Path(__file__).resolve().parents[1]


def _rel(path: Path, start: Path) -> str:
    rel = os.path.relpath(path.resolve(), start.resolve())
    return rel if rel.startswith(".") else f"./{rel}"


def _http_check(url: str, interval: str, retries: int, start_period: str) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('{url}', timeout=4)"
    return {
        "test": ["CMD", "python3", "-c", probe],
        "interval": interval,
        "timeout": "5s",
        "retries": retries,
        "start_period": start_period,
    }


def _secrets_env(pool: PoolConfig) -> dict[str, str]:
    """The upstream keys the pool names, passed through from the environment of `up`."""
    names = sorted({e.api_key_env for e in pool.experts if e.api_key_env})
    return {name: f"${{{name}:-}}" for name in names}


# -- the CPU stack (host network) --------------------------------------------------------------


def _cpu_services(
    pool: PoolConfig, experts: list[ExpertService], out: Path, pool_path: Path, prom: str
) -> dict[str, Any]:
    root, mount = _rel(ROOT, out), f"{_rel(pool_path, out)}:{POOL_IN_CONTAINER}:ro"
    coe_build = {
        "context": root,
        "target": "local",
        "network": "host",
        "args": {"BASE": "${COE_BASE_IMAGE:-python:3.11-slim}"},
    }
    redis_port = "${COE_REDIS_PORT:-6379}"
    services: dict[str, Any] = {
        "redis": {
            "image": "coe-redis:latest",
            "build": {
                **coe_build,
                "dockerfile": "deploy/docker/services.Dockerfile",
                "target": "redis",
            },
            "network_mode": "host",
            "command": [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                redis_port,
                "--dir",
                "/data",
                "--appendonly",
                "yes",
            ],
            "volumes": ["redis-data:/data"],
            "healthcheck": {
                "test": ["CMD", "redis-cli", "-p", redis_port, "ping"],
                "interval": "5s",
                "timeout": "3s",
                "retries": 10,
            },
        }
    }
    for svc in experts:
        services[svc.name] = {
            "image": "coe-local:latest",
            "build": coe_build,
            "network_mode": "host",
            "command": [
                "coe",
                "deploy",
                "expert",
                "--pool",
                POOL_IN_CONTAINER,
                "--name",
                svc.expert.name,
            ],
            "volumes": [mount],
            "healthcheck": _http_check(f"http://127.0.0.1:{svc.port}/v1/models", "5s", 12, "60s"),
        }
    services["gateway"] = {
        "image": "coe-local:latest",
        "build": coe_build,
        "network_mode": "host",
        "depends_on": {name: {"condition": "service_healthy"} for name in services},
        "environment": {
            "COE_POOL": POOL_IN_CONTAINER,
            "COE_HOST": "127.0.0.1",
            "COE_PORT": "${COE_PORT:-8000}",
            "COE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            **_secrets_env(pool),
        },
        "volumes": [mount],
        "healthcheck": _http_check("http://127.0.0.1:${COE_PORT:-8000}/health", "5s", 12, "60s"),
    }
    # Prometheus reads no environment in its config: the scrape target's port is filled in
    # when the container starts, from the same COE_PORT the gateway reads.
    fill = (
        'sed "s/COE_PORT/$${COE_PORT}/" /etc/prometheus/prometheus.yml > /tmp/prometheus.yml'
        " && exec prometheus --config.file=/tmp/prometheus.yml --storage.tsdb.path=/prometheus"
        " --web.listen-address=127.0.0.1:$${PROMETHEUS_PORT}"
    )
    services["prometheus"] = {
        "image": "coe-prometheus:latest",
        "build": {
            **coe_build,
            "dockerfile": "deploy/docker/services.Dockerfile",
            "target": "prometheus",
        },
        "network_mode": "host",
        "depends_on": {"gateway": {"condition": "service_healthy"}},
        "environment": {
            "COE_PORT": "${COE_PORT:-8000}",
            "PROMETHEUS_PORT": "${PROMETHEUS_PORT:-9090}",
        },
        "entrypoint": ["sh", "-c", fill],
        "volumes": [f"./{prom}:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"],
        "healthcheck": {
            "test": ["CMD-SHELL", "wget -qO- http://127.0.0.1:$${PROMETHEUS_PORT}/-/healthy"],
            "interval": "5s",
            "timeout": "3s",
            "retries": 12,
        },
    }
    services["grafana"] = grafana_service(_rel(GRAFANA_DIR, out), host_network=True)
    return services


# -- the GPU host (service network) ------------------------------------------------------------


def _vllm_service(svc: ExpertService, share: float, after: str | None) -> dict[str, Any]:
    expert = svc.expert
    service: dict[str, Any] = {
        "image": VLLM_IMAGE,
        "restart": "unless-stopped",
        "ipc": "host",  # PyTorch shares tensors between vLLM's processes through /dev/shm
        "environment": {"HF_TOKEN": "${HF_TOKEN:-}", "VLLM_SERVER_DEV_MODE": "1"},
        "volumes": ["hf-cache:/root/.cache/huggingface"],
        "command": [
            f"--model={expert.served_model}",
            f"--served-model-name={expert.served_model}",
            f"--port={svc.port}",
            f"--max-model-len={expert.context_length}",
            f"--gpu-memory-utilization={share:.2f}",
            "--enable-sleep-mode",
            *tool_call_args(expert),  # the pool's tool-call parser is in extra_args
            *expert.extra_args,
        ],
        "deploy": {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
                }
            }
        },
        "healthcheck": _http_check(f"http://localhost:{svc.port}/health", "15s", 5, "15m"),
    }
    if after is not None:  # one at a time: vLLM sizes its cache from the memory free at start
        service["depends_on"] = {after: {"condition": "service_healthy"}}
    return service


def _gpu_services(
    pool: PoolConfig, experts: list[ExpertService], out: Path, pool_path: Path, prom: str
) -> dict[str, Any]:
    services: dict[str, Any] = {
        "redis": {
            "image": "redis:7",
            "restart": "unless-stopped",
            "volumes": ["redis-data:/data"],  # request log, budgets and counters survive
            "healthcheck": {
                "test": ["CMD", "redis-cli", "ping"],
                "interval": "5s",
                "timeout": "3s",
                "retries": 10,
            },
        }
    }
    vllm = [s for s in experts if s.engine == "vllm"]
    share = GPU_SHARE / max(len(vllm), 1)
    share = int(share * 100) / 100  # rounded down: together they stay under GPU_SHARE
    after: str | None = None
    for svc in vllm:
        services[svc.name] = _vllm_service(svc, share, after)
        after = svc.name
    services["gateway"] = {
        "build": {"context": _rel(ROOT, out), "target": "gateway"},
        "image": "coe:latest",
        "restart": "unless-stopped",
        "depends_on": {name: {"condition": "service_healthy"} for name in services},
        "environment": {
            "COE_POOL": POOL_IN_CONTAINER,
            "COE_HOST": "0.0.0.0",
            "COE_PORT": "8000",
            "COE_REDIS_URL": "redis://redis:6379/0",
            **_secrets_env(pool),
        },
        "volumes": [f"{_rel(pool_path, out)}:{POOL_IN_CONTAINER}:ro"],
        "ports": ["8000:8000"],
        "healthcheck": _http_check("http://localhost:8000/health", "10s", 3, "30s"),
    }
    services["prometheus"] = {
        "image": "prom/prometheus:v3.5.0",
        "restart": "unless-stopped",
        "depends_on": {"gateway": {"condition": "service_healthy"}},
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.retention.time=15d",
        ],
        "volumes": [
            f"./{prom}:/etc/prometheus/prometheus.yml:ro",
            "prometheus-data:/prometheus",
        ],
        "ports": ["9090:9090"],
        "healthcheck": {
            "test": ["CMD", "wget", "-qO-", "http://localhost:9090/-/healthy"],
            "interval": "10s",
            "timeout": "5s",
            "retries": 5,
        },
    }
    services["grafana"] = grafana_service(_rel(GRAFANA_DIR, out), host_network=False)
    return services


_CPU_USAGE = """#
# The CPU stack: Redis, one llama.cpp container per expert, the gateway, Prometheus, all on the
# host network (127.0.0.1). Build the images, then start it:
#
#   deploy/docker/build.sh && docker-compose -f deploy/cpu/docker-compose.yml up -d
#
# Ports: COE_PORT (gateway, 8000), COE_REDIS_PORT (6379), PROMETHEUS_PORT (9090); the experts'
# ports are the pool's base_urls. Grafana with the coe dashboard (GRAFANA_PORT, 3000) is behind
# the profile `grafana`, as its image comes from a registry: add `--profile grafana` to `up`.

"""
_GPU_USAGE = """#
# A GPU host: Redis, one vLLM container per expert sharing one GPU (started one after another:
# vLLM sizes its KV cache from the memory it sees free), the gateway, Prometheus
# (http://localhost:9090) and Grafana with the coe dashboard (http://localhost:3000, admin and
# GRAFANA_ADMIN_PASSWORD). Gated models need HF_TOKEN:
#
#   HF_TOKEN=hf_... docker compose up -d
#   curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
#     -d '{"model": "coe-auto", "messages": [{"role": "user", "content": "hi"}]}'

"""


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors for repeated parts, lists indented under their key."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


def _prometheus(target: str) -> str:
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": "coe-gateway",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    return (
        "# Prometheus for the compose stack beside it: scrapes the coe gateway's /metrics.\n"
        + dump(config)
    )


def render_compose(
    pool_path: Path, out: Path, prometheus_file: str = "prometheus.yml"
) -> dict[Path, str]:
    """The stack for the pool at `pool_path`, as {file to write: text}, paths inside `out`
    (Prometheus's config at `prometheus_file`, relative to `out`).

    Raises `deploy.topology.DeployError` for a pool that cannot be deployed this way and
    `experts.errors.PoolConfigError` for an invalid pool file.
    """
    pool = load_pool(pool_path)
    experts = expert_services(pool)
    host = uses_host_network(pool)
    build = _cpu_services if host else _gpu_services
    compose = {
        "services": build(pool, experts, out, pool_path, prometheus_file),
        "volumes": {name: {} for name in ("redis-data", "prometheus-data", "grafana-data")}
        | ({} if host else {"hf-cache": {}}),
    }
    source = _rel(pool_path, ROOT).removeprefix("./")
    banner = (
        f"# Generated by `coe deploy compose --pool {source}` from that pool file: edit the pool\n"
        "# (or deploy/compose.py) and render again; `coe deploy check` finds a stale copy.\n"
    )
    text = banner + (_CPU_USAGE if host else _GPU_USAGE) + dump(compose)
    target = "127.0.0.1:COE_PORT" if host else "gateway:8000"
    return {out / "docker-compose.yml": text, out / prometheus_file: _prometheus(target)}


def write_files(files: dict[Path, str]) -> None:
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
