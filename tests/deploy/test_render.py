"""`coe deploy compose|k8s`: what they render from a pool file, and the shipped files' drift.

The Kubernetes manifests are validated offline against the Kubernetes schemas
(`kubernetes-validate`, which ships them), and every expert Service is checked against the pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from api.cli import app as cli_app
from deploy.cli import SHIPPED, stale
from deploy.compose import POOL_IN_CONTAINER, render_compose
from deploy.expert import expert_command
from deploy.k8s import GATEWAY_PORT, render_k8s
from deploy.topology import DeployError
from experts.pool import load_pool

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"


def _docs(files: dict[Path, str]) -> list[dict[str, Any]]:
    return [d for text in files.values() for d in yaml.safe_load_all(text) if d]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_shipped_compose_files_are_what_their_pools_render() -> None:
    assert [p for p, *_ in SHIPPED] and not stale(ROOT), (
        "a shipped compose file is stale: run `coe deploy compose` as deploy/cli.py's SHIPPED says"
    )


def test_drift_is_found(tmp_path: Path) -> None:
    for pool, out, prometheus in SHIPPED:
        (tmp_path / pool).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / pool).write_text((ROOT / pool).read_text())
        for path, text in render_compose(tmp_path / pool, tmp_path / out, prometheus).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    assert stale(tmp_path) == []
    edited = tmp_path / "deploy/cpu/docker-compose.yml"
    edited.write_text(edited.read_text().replace("coe-redis:latest", "redis:7"))
    assert stale(tmp_path) == [edited]


def test_cpu_stack_runs_every_expert_where_the_pool_calls_it() -> None:
    pool = load_pool(ROOT / "config/cpu.yaml")
    files = render_compose(ROOT / "config/cpu.yaml", ROOT / "deploy/cpu")
    services = yaml.safe_load(files[ROOT / "deploy/cpu/docker-compose.yml"])["services"]
    assert list(services) == [
        "redis",
        "expert-smollm2-135m",
        "expert-gemma3-270m",
        "gateway",
        "prometheus",
        "grafana",  # behind its profile (tests/deploy/test_grafana.py)
    ]
    assert all(s["network_mode"] == "host" for s in services.values())
    assert all(s["healthcheck"]["test"] for s in services.values())
    waits = services["gateway"]["depends_on"]
    assert waits == {n: {"condition": "service_healthy"} for n in list(services)[:3]}
    for expert in pool.experts:
        service = services[f"expert-{expert.name}"]
        argv = service["command"]
        assert argv[:3] == ["coe", "deploy", "expert"] and argv[-1] == expert.name
        port = urlsplit(expert.base_url or "").port
        assert f"127.0.0.1:{port}/v1/models" in " ".join(service["healthcheck"]["test"])
        assert service["volumes"] == [f"../../config/cpu.yaml:{POOL_IN_CONTAINER}:ro"]


def test_an_expert_container_serves_on_its_base_url_port(tmp_path: Path) -> None:
    pool = load_pool(ROOT / "config/cpu.yaml")
    argv = expert_command(pool, "gemma3-270m", tmp_path, host=None)
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    assert flags["--port"] == "28182" and flags["--host"] == "127.0.0.1"
    assert flags["--model_alias"] == "gemma3-270m" and flags["--chat_format"] == "gemma"
    assert Path(flags["--model"]).is_file()
    assert "0.0.0.0" in expert_command(pool, "smollm2-135m", tmp_path, host="0.0.0.0")
    with pytest.raises(DeployError, match="no expert 'nope'"):
        expert_command(pool, "nope", tmp_path, host=None)


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("local.yaml", "has no base_url"),
        ("mixed", "mixes experts on 127.0.0.1"),
    ],
)
def test_pools_that_cannot_be_deployed_say_why(tmp_path: Path, pool: str, message: str) -> None:
    path = ROOT / "config" / pool
    if pool == "mixed":
        path = tmp_path / "mixed.yaml"
        path.write_text(
            "experts:\n"
            "  - {name: a, engine: vllm, base_url: 'http://127.0.0.1:9001/v1', tools: false}\n"
            "  - {name: b, engine: vllm, base_url: 'http://vllm-b:8000/v1', tools: false}\n"
        )
    with pytest.raises(DeployError, match=message):
        render_compose(path, tmp_path)


def test_k8s_manifests_are_valid_kubernetes(tmp_path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _docs(render_k8s(ROOT / "config/vllm.yaml", tmp_path))
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Service", "StatefulSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = _find(docs, "Deployment", "coe-gateway")
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_k8s_services_match_the_pool_and_the_gateway_is_probed(tmp_path: Path) -> None:
    pool = load_pool(ROOT / "config/vllm.yaml")
    docs = _docs(render_k8s(ROOT / "config/vllm.yaml", tmp_path, replicas=3))
    for expert in pool.experts:
        url = urlsplit(expert.base_url or "")
        service = _find(docs, "Service", url.hostname or "")
        assert [p["port"] for p in service["spec"]["ports"]] == [url.port]
        [container] = _find(docs, "Deployment", url.hostname or "")["spec"]["template"]["spec"][
            "containers"
        ]
        assert f"--served-model-name={expert.served_model}" in container["args"]
        assert (
            f"--port={url.port}" in container["args"] and "--enable-sleep-mode" in container["args"]
        )
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in container["env"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": url.port}
    gateway = _find(docs, "Deployment", "coe-gateway")
    template = gateway["spec"]["template"]
    [container] = template["spec"]["containers"]
    assert gateway["spec"]["replicas"] == 3
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert {"secretRef": {"name": "coe-secrets", "optional": True}} in container["envFrom"]
    assert _find(docs, "Service", "coe-gateway")["spec"]["ports"][0]["port"] == GATEWAY_PORT
    hpa = _find(docs, "HorizontalPodAutoscaler", "coe-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "coe-gateway"
    config = _find(docs, "ConfigMap", "coe-pool")["data"]["pool.yaml"]
    assert yaml.safe_load(config) == yaml.safe_load((ROOT / "config/vllm.yaml").read_text())
    redis = _find(docs, "StatefulSet", "redis")
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_k8s_refuses_experts_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="must name it"):
        render_k8s(ROOT / "config/cpu.yaml", tmp_path)


def test_cli_renders_and_reports_bad_pools(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        cli_app, ["deploy", "k8s", "--pool", str(ROOT / "config/vllm.yaml"), "--out", str(tmp_path)]
    )
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "experts.yaml",
        "gateway.yaml",
        "redis.yaml",
    ]
    bad = runner.invoke(
        cli_app,
        ["deploy", "compose", "--pool", str(ROOT / "config/local.yaml"), "--out", str(tmp_path)],
    )
    assert bad.exit_code == 2 and "has no base_url" in bad.output


def test_k8s_runs_llamacpp_experts_with_coe_deploy_expert(tmp_path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        (ROOT / "config/cpu.yaml")
        .read_text()
        .replace("127.0.0.1:28181", "smollm:8080")
        .replace("127.0.0.1:28182", "gemma:8080")
    )
    docs = _docs(render_k8s(pool, tmp_path, local_image="registry.example/coe-local:1"))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    [container] = _find(docs, "Deployment", "gemma")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/coe-local:1"
    assert container["args"][-4:] == ["--name", "gemma3-270m", "--host", "0.0.0.0"]
    assert _find(docs, "Service", "gemma")["spec"]["ports"][0]["port"] == 8080


def test_vllm_experts_that_take_tools_run_with_their_tool_call_parser(tmp_path: Path) -> None:
    pool = load_pool(ROOT / "config/vllm.yaml")
    files = render_compose(ROOT / "config/vllm.yaml", tmp_path)
    services = yaml.safe_load(files[tmp_path / "docker-compose.yml"])["services"]
    docs = _docs(render_k8s(ROOT / "config/vllm.yaml", tmp_path))
    for expert in pool.experts:
        host = urlsplit(expert.base_url or "").hostname or ""
        [container] = _find(docs, "Deployment", host)["spec"]["template"]["spec"]["containers"]
        for argv in (services[host]["command"], container["args"]):
            assert "--enable-auto-tool-choice" in argv and expert.extra_args[0] in argv
            assert expert.extra_args[0].startswith("--tool-call-parser=")
    # without a parser vLLM would answer every request with tools 400: say so, or tools: false
    bare = tmp_path / "bare.yaml"
    bare.write_text("experts:\n  - {name: q, engine: vllm, base_url: 'http://vllm-q:8000/v1'}\n")
    with pytest.raises(DeployError, match=r"tool-call parser .* or set tools: false"):
        render_compose(bare, tmp_path)
    bare.write_text(bare.read_text().replace("}", ", tools: false}"))
    argv = yaml.safe_load(render_compose(bare, tmp_path)[tmp_path / "docker-compose.yml"])[
        "services"
    ]["vllm-q"]["command"]
    assert not any("tool" in a for a in argv)
