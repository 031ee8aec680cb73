"""The GPU deployment files agree with the code and the vLLM pool they deploy.

No GPU runs in CI, so a typo in docker-compose.yml (a service name that is not the pool's host, a
served model name the gateway does not ask for, a setting the gateway ignores) would only show on
a GPU host. These tests read the files and check them against the code instead. (The file is
rendered from config/vllm.yaml by `coe deploy compose`; tests/deploy checks it is not stale, and
tests/deploy/test_stack.py runs the CPU stack for real.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import typer.core
import typer.main
import yaml

from api.app import create_app
from api.cli import app as cli_app
from api.settings import Settings
from experts.pool import PoolConfig, load_pool
from tests.conftest import Gateway

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GATEWAY = "gateway"
VLLM_SERVICES = ("vllm-qwen", "vllm-llama", "vllm-mistral")
#: Services that watch the gateway: they wait for it, not it for them.
MONITORS = {"prometheus", "grafana"}

# Settings that the compose file already sets for features being built now; each entry must
# become a `Settings` field. Keep it short: anything else here hides a typo.
PLANNED_SETTINGS: set[str] = set()


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether the file writes it as a mapping or as a list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _args(command: str | list[str]) -> dict[str, str | None]:
    """`--flag value`, `--flag=value` and bare `--flag` arguments as {flag: value or None}."""
    argv = command.split() if isinstance(command, str) else [str(a) for a in command]
    args: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--"), f"unexpected positional argument {flag!r} in {argv}"
        if "=" in flag:
            name, value = flag.split("=", 1)
            args[name] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            args[flag] = argv[i + 1]
            i += 1
        else:
            args[flag] = None
        i += 1
    return args


def _container_path(service: dict[str, Any], path: str) -> Path:
    """The repo file that a service sees at `path`: mounted from the repo, or in the image
    (the Dockerfile copies the repo to /app)."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if target == path and source.startswith("."):
            return (ROOT / source).resolve()
    assert path.startswith("/app/"), f"{path} is neither mounted nor under /app (the repo)"
    return ROOT / path.removeprefix("/app/")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pool(services: dict[str, dict[str, Any]]) -> PoolConfig:
    return load_pool(_container_path(services[GATEWAY], _env(services[GATEWAY])["COE_POOL"]))


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name, s in services.items() if not s.get("healthcheck", {}).get("test")]
    assert not missing, f"services without a healthcheck: {missing}"


def test_gateway_waits_for_every_other_service_to_be_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    depends = services[GATEWAY].get("depends_on", {})
    assert isinstance(depends, dict), "depends_on must be a mapping to carry conditions"
    for name in services.keys() - {GATEWAY} - MONITORS:
        assert name in depends, f"gateway does not depend on {name}"
        condition = depends[name].get("condition")
        assert condition == "service_healthy", f"gateway waits for {name} with {condition!r}"


def test_gateway_env_names_only_settings(services: dict[str, dict[str, Any]]) -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    known = {f"{prefix}{field}".upper() for field in Settings.model_fields}
    ours = {k for k in _env(services[GATEWAY]) if k.startswith(prefix)}
    unknown = ours - known - PLANNED_SETTINGS
    assert not unknown, f"gateway env vars that no Settings field reads: {sorted(unknown)}"
    landed = PLANNED_SETTINGS & known
    assert not landed, f"{sorted(landed)} are Settings fields now: drop them from the allow-list"


def test_gateway_pool_is_a_valid_pool_file_of_the_repo(
    services: dict[str, dict[str, Any]],
) -> None:
    path = _container_path(services[GATEWAY], _env(services[GATEWAY])["COE_POOL"])
    assert path.is_file(), f"COE_POOL names {path}, which is not in the repo"
    assert load_pool(path).experts, f"{path} has no experts"


def test_every_pool_expert_is_a_service_serving_its_model(
    services: dict[str, dict[str, Any]], pool: PoolConfig
) -> None:
    for expert in pool.experts:
        assert expert.base_url is not None
        url = urlsplit(expert.base_url)
        assert url.hostname in services, f"{expert.name}: no service named {url.hostname!r}"
        args = _args(services[url.hostname]["command"])
        assert args.get("--port") == str(url.port), (
            f"{expert.name}: pool calls port {url.port}, {url.hostname} serves {args.get('--port')}"
        )
        assert args.get("--served-model-name") == expert.served_model, (
            f"{expert.name}: pool sends model {expert.served_model!r}, "
            f"{url.hostname} serves {args.get('--served-model-name')!r}"
        )
        assert args.get("--model") == expert.served_model, (
            f"{expert.name}: {url.hostname} loads {args.get('--model')!r}"
        )
        max_len = args.get("--max-model-len")
        assert max_len == str(expert.context_length), (
            f"{expert.name}: pool promises {expert.context_length} tokens, vLLM allows {max_len}"
        )


@pytest.mark.parametrize("name", VLLM_SERVICES)
def test_vllm_expert_reserves_a_gpu_and_can_sleep(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+\S*", service["image"]), (
        f"{name}: image {service['image']!r} is not pinned to a release tag"
    )
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    args = _args(service["command"])
    assert "--enable-sleep-mode" in args, f"{name} cannot sleep: residency could not swap it"
    assert _env(service).get("VLLM_SERVER_DEV_MODE") == "1", f"{name}: /sleep is not exposed"
    assert "localhost:8000/health" in " ".join(service["healthcheck"]["test"])


def test_vllm_experts_fit_one_gpu_together(services: dict[str, dict[str, Any]]) -> None:
    share = sum(
        float(_args(services[name]["command"])["--gpu-memory-utilization"] or "1")
        for name in VLLM_SERVICES
    )
    assert share <= 0.95, f"the experts ask for {share:.2f} of one GPU together"


def test_dockerfile_runs_a_real_coe_command(dockerfile: list[str]) -> None:
    cmds = [line for line in dockerfile if line.startswith("CMD ")]
    assert len(cmds) == 2, f"expected a CMD per target (local, gateway), found {cmds}"
    group = typer.main.get_command(cli_app)
    assert isinstance(group, typer.core.TyperGroup), "the coe CLI lost its subcommands"
    commands = group.commands
    for cmd in cmds:
        argv = json.loads(cmd.removeprefix("CMD "))  # exec form: signals reach coe
        assert argv[0] == "coe", f"CMD runs {argv[0]!r}, not the coe console script"
        assert argv[1] in commands, f"`coe {argv[1]}` is not a command; have {sorted(commands)}"
    assert dockerfile[-1] == cmds[-1] and "AS gateway" in " ".join(dockerfile), (
        "the default (last) target must be the GPU host's gateway"
    )


def test_dockerfile_copies_the_repo_to_app_and_drops_root(dockerfile: list[str]) -> None:
    assert "WORKDIR /app" in dockerfile, "the compose file's /app paths assume WORKDIR /app"
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, f"the gateway runs as {users or 'root'}"
    assert any(line.startswith("HEALTHCHECK ") for line in dockerfile)
    installs = [line for line in dockerfile if "pip install" in line]
    assert "torch==" in installs[0] and "TORCH_INDEX" in installs[0], "CPU torch must come first"
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    assert "requirements.txt" in installs[1], "the dependencies come next"
    assert any("['embed']" in line for line in dockerfile), "the embedder's among them"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "config" not in ignored, "the pool files must reach the image"


async def test_gateway_healthcheck_path_is_a_route(services: dict[str, dict[str, Any]]) -> None:
    """Asked in-process without the lifespan: FastAPI >= 0.165 folds included routers into
    lazy `_IncludedRouter` entries, so `app.routes` no longer lists `/health` by path."""
    test = " ".join(services[GATEWAY]["healthcheck"]["test"])
    match = re.search(r"http://localhost:(\d+)(/\S*?)['\"]", test)
    assert match, f"no http://localhost URL in the gateway healthcheck {test!r}"
    assert match[1] == _env(services[GATEWAY])["COE_PORT"]
    app = create_app(Settings(_env_file=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get(match[2])
    assert response.status_code == 200, f"GET {match[2]} answers {response.status_code}"


async def test_prometheus_scrapes_the_gateway_metrics_route(
    services: dict[str, dict[str, Any]], gateway: Gateway
) -> None:
    prometheus = services["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert prometheus["depends_on"][GATEWAY]["condition"] == "service_healthy"
    mounts = dict(v.rsplit(":", 2)[:2] for v in prometheus["volumes"] if v.startswith("./"))
    config_file = _args(prometheus["command"])["--config.file"]
    source = next(src for src, dst in mounts.items() if dst == config_file)
    config = yaml.safe_load((ROOT / source).read_text())
    [job] = config["scrape_configs"]
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == GATEWAY and port == _env(services[GATEWAY])["COE_PORT"]
    response = await gateway.client.get(job.get("metrics_path", "/metrics"))
    assert response.status_code == 200 and "# TYPE coe_requests_total counter" in response.text
