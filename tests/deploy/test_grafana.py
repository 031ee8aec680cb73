"""Grafana in the shipped compose stacks (offline): the service, what it mounts, and that the
provisioned datasource is the stack's Prometheus and the one the coe dashboard selects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from api.cli import app as cli_app
from deploy.cli import SHIPPED
from deploy.monitoring import (
    DASHBOARDS_IN_CONTAINER,
    DATASOURCE_UID,
    GRAFANA_IMAGE,
    GRAFANA_PROFILE,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
GPU, CPU = (ROOT / out / "docker-compose.yml" for _, out, _ in SHIPPED)


def _services(compose_file: Path) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(compose_file.read_text())["services"]
    return services


def _mounts(compose_file: Path, service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the host path it mounts (bind mounts only, resolved)."""
    binds = [v.split(":") for v in service["volumes"] if v.startswith(".")]
    return {target: (compose_file.parent / source).resolve() for source, target, _ in binds}


def _provisioning(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (GRAFANA / "provisioning" / kind / "coe.yaml").read_text()
    )
    assert data["apiVersion"] == 1
    return data


def _expand(text: str, env: dict[str, str]) -> str:
    """What compose makes of `${NAME:-default}` when NAME is unset."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1], m[2]), text)


@pytest.mark.parametrize("compose_file", [GPU, CPU], ids=["gpu", "cpu"])
def test_each_stack_runs_grafana_with_the_provisioning_mounted(compose_file: Path) -> None:
    services = _services(compose_file)
    grafana = services["grafana"]
    assert grafana["image"] == GRAFANA_IMAGE and ":" in GRAFANA_IMAGE  # pinned
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    mounts = _mounts(compose_file, grafana)
    assert mounts == {
        "/etc/grafana/provisioning/datasources": GRAFANA / "provisioning" / "datasources",
        "/etc/grafana/provisioning/dashboards": GRAFANA / "provisioning" / "dashboards",
        f"{DASHBOARDS_IN_CONTAINER}/coe.json": GRAFANA / "coe.json",
    }
    assert all(path.exists() for path in mounts.values())
    assert all(v.endswith(":ro") for v in grafana["volumes"] if v.startswith("."))
    assert "grafana-data:/var/lib/grafana" in grafana["volumes"]
    assert "grafana-data" in yaml.safe_load(compose_file.read_text())["volumes"]
    # the provider reads the folder the dashboard is mounted in; Grafana opens on it
    [provider] = _provisioning("dashboards")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == DASHBOARDS_IN_CONTAINER
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{DASHBOARDS_IN_CONTAINER}/coe.json"


def test_the_gpu_host_starts_grafana_and_the_cpu_stack_only_with_its_profile() -> None:
    gpu, cpu = _services(GPU)["grafana"], _services(CPU)["grafana"]
    assert "profiles" not in gpu and gpu["ports"] == ["3000:3000"]
    assert cpu["profiles"] == [GRAFANA_PROFILE] and cpu["network_mode"] == "host"
    assert cpu["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"  # as the rest of the stack
    # nothing the CPU stack starts by default waits for Grafana (its image needs a registry)
    others = [s for name, s in _services(CPU).items() if name != "grafana"]
    assert all("grafana" not in s.get("depends_on", {}) for s in others)


def test_the_datasource_is_the_stacks_prometheus() -> None:
    [source] = _provisioning("datasources")["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    assert source["isDefault"] is True and source["url"] == "${COE_PROMETHEUS_URL}"
    # GPU host: the `prometheus` service on the port it serves (and publishes)
    gpu = _services(GPU)
    url = urlsplit(gpu["grafana"]["environment"]["COE_PROMETHEUS_URL"])
    assert url.hostname in gpu and url.hostname == "prometheus"
    assert f"{url.port}:{url.port}" in gpu["prometheus"]["ports"]
    assert f":{url.port}/" in " ".join(gpu["prometheus"]["healthcheck"]["test"])
    # CPU stack: 127.0.0.1 on PROMETHEUS_PORT, the variable Prometheus listens on, either way
    cpu = _services(CPU)
    listen = " ".join(cpu["prometheus"]["entrypoint"])
    assert "--web.listen-address=127.0.0.1:$${PROMETHEUS_PORT}" in listen
    raw = cpu["grafana"]["environment"]["COE_PROMETHEUS_URL"]
    default_port = _expand(cpu["prometheus"]["environment"]["PROMETHEUS_PORT"], {})
    for env in ({}, {"PROMETHEUS_PORT": "28190"}):
        port = env.get("PROMETHEUS_PORT", default_port)
        assert _expand(raw, env) == f"http://127.0.0.1:{port}"
    # Grafana's minimum step is Prometheus's scrape interval
    scrape = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    assert source["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]


def test_the_dashboard_selects_the_provisioned_datasource() -> None:
    dashboard = json.loads((GRAFANA / "coe.json").read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    assert variable["current"]["value"] == DATASOURCE_UID
    uses = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uses == {f"${{{variable['name']}}}"}  # every panel goes through the variable


def test_coe_deploy_check_passes_on_the_stacks_with_grafana() -> None:
    done = CliRunner().invoke(cli_app, ["deploy", "check", "--root", str(ROOT)])
    assert done.exit_code == 0, done.output


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("compose_file", [GPU, CPU], ids=["gpu", "cpu"])
def test_docker_compose_accepts_the_stack(compose_file: Path) -> None:
    """`docker-compose config` validates the file against compose's schema, offline."""
    argv = ["docker-compose", "-f", str(compose_file), "--profile", GRAFANA_PROFILE, "config"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "grafana" in yaml.safe_load(done.stdout)["services"]
