"""Grafana in the compose stacks: the coe dashboard on the stack's Prometheus, provisioned.

The provisioning files are static, under `deploy/grafana/provisioning/` (a Prometheus datasource
whose URL is read from the service's environment, and a dashboard provider), and the dashboard is
`deploy/grafana/coe.json`; `deploy.compose` mounts them into the Grafana service rendered here,
so both stacks share one copy and `coe deploy check` covers the services that mount them.

No package registry ships a runnable Grafana server (Debian has no `grafana` package; the
`grafana` names on PyPI and npm are placeholders), so the service runs Grafana's upstream image,
pinned. The GPU host pulls it like the vLLM and Prometheus images. The CPU stack, built where no
image registry answers, has it behind the compose profile `grafana`: off by default, and on a host
that can pull it, `docker compose --profile grafana up -d`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "DASHBOARDS_IN_CONTAINER",
    "DATASOURCE_UID",
    "GRAFANA_IMAGE",
    "GRAFANA_PROFILE",
    "grafana_service",
]

GRAFANA_IMAGE = "grafana/grafana:12.2.0"
#: the provisioned Prometheus datasource's uid, which the dashboard selects by default
DATASOURCE_UID = "coe-prometheus"
#: where the dashboard provider (provisioning/dashboards/coe.yaml) reads dashboards from
DASHBOARDS_IN_CONTAINER = "/etc/grafana/dashboards"
#: the CPU stack's profile that turns Grafana on (its image comes from a registry)
GRAFANA_PROFILE = "grafana"
GRAFANA_DIR = Path(__file__).resolve().parent / "grafana"

# Grafana's image is Alpine (busybox wget) or, in its -ubuntu variant, has curl: try either.
_PROBE = "wget -q --spider {url} || curl -fso /dev/null {url}"


def _mounts(rel: str) -> list[str]:
    """The provisioning folders and the dashboard, from `rel` (deploy/grafana relative to the
    compose file), read-only, plus Grafana's own state (users, preferences) in a volume."""
    provisioning = f"{rel}/provisioning"
    return [
        f"{provisioning}/datasources:/etc/grafana/provisioning/datasources:ro",
        f"{provisioning}/dashboards:/etc/grafana/provisioning/dashboards:ro",
        f"{rel}/coe.json:{DASHBOARDS_IN_CONTAINER}/coe.json:ro",
        "grafana-data:/var/lib/grafana",
    ]


def _environment(prometheus_url: str, port: str) -> dict[str, str]:
    return {
        "COE_PROMETHEUS_URL": prometheus_url,  # read by provisioning/datasources/coe.yaml
        "GF_SERVER_HTTP_PORT": port,
        # the admin password is asked for a change at first login unless one is set here
        "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:-admin}",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{DASHBOARDS_IN_CONTAINER}/coe.json",
    }


def grafana_service(rel: str, *, host_network: bool) -> dict[str, Any]:
    """The Grafana service for a stack whose compose file sees deploy/grafana at `rel`.

    `host_network`: the CPU stack (everything on 127.0.0.1, ports from the environment,
    behind `GRAFANA_PROFILE`); otherwise the GPU host's service network, where Prometheus is
    the `prometheus` service on 9090 and Grafana publishes 3000.
    """
    healthcheck = {"interval": "10s", "timeout": "5s", "retries": 12, "start_period": "30s"}
    if not host_network:
        return {
            "image": GRAFANA_IMAGE,
            "restart": "unless-stopped",
            "depends_on": {"prometheus": {"condition": "service_healthy"}},
            "environment": _environment("http://prometheus:9090", "3000"),
            "volumes": _mounts(rel),
            "ports": ["3000:3000"],
            "healthcheck": {
                "test": ["CMD-SHELL", _PROBE.format(url="http://localhost:3000/api/health")],
                **healthcheck,
            },
        }
    env = _environment("http://127.0.0.1:${PROMETHEUS_PORT:-9090}", "${GRAFANA_PORT:-3000}")
    url = "http://127.0.0.1:$${GF_SERVER_HTTP_PORT}/api/health"  # $$: the container's shell
    return {
        "image": GRAFANA_IMAGE,
        "profiles": [GRAFANA_PROFILE],
        "network_mode": "host",
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
        "environment": {**env, "GF_SERVER_HTTP_ADDR": "127.0.0.1"},
        "volumes": _mounts(rel),
        "healthcheck": {"test": ["CMD-SHELL", _PROBE.format(url=url)], **healthcheck},
    }
