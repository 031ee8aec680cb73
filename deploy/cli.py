"""`coe deploy ...`: render deployments from a pool file, check the shipped ones, run an expert.

coe deploy compose --pool config/cpu.yaml --out deploy/cpu
coe deploy k8s --pool config/vllm.yaml --out k8s [--image registry/coe:0.1.0]
coe deploy check                      # the shipped compose files match their pools
coe deploy expert --pool POOL --name NAME     # inside an expert container
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["SHIPPED", "app", "stale"]

app = typer.Typer(name="deploy", help="Render deployments from a pool file.", no_args_is_help=True)

#: The compose stacks shipped in the repository, paths from its root: (pool file, output
#: folder, Prometheus config inside it). The GPU host's is the top-level docker-compose.yml.
SHIPPED = (
    (Path("config/vllm.yaml"), Path("."), "config/prometheus.yml"),
    (Path("config/cpu.yaml"), Path("deploy/cpu"), "prometheus.yml"),
)

PoolOption = Annotated[Path, typer.Option(help="the pool file (YAML) to deploy")]
OutOption = Annotated[Path, typer.Option(help="folder to write the files into")]


def _render(files: dict[Path, str]) -> None:
    from deploy.compose import write_files

    write_files(files)
    for path in files:
        typer.echo(f"wrote {path}", err=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.command()
def compose(
    pool: PoolOption,
    out: OutOption,
    prometheus_file: Annotated[str, typer.Option(help="Prometheus config, inside OUT")] = (
        "prometheus.yml"
    ),
) -> None:
    """A docker-compose stack: the CPU stack for experts on 127.0.0.1, else a GPU host."""
    from deploy.compose import render_compose
    from deploy.topology import DeployError
    from experts.errors import PoolConfigError

    try:
        _render(render_compose(pool, out, prometheus_file))
    except (DeployError, PoolConfigError) as exc:
        raise _fail(exc) from exc


@app.command()
def k8s(
    pool: PoolOption,
    out: OutOption,
    image: Annotated[str, typer.Option(help="the gateway image")] = "coe:latest",
    local_image: Annotated[str, typer.Option(help="the image of llama.cpp experts")] = (
        "coe-local:latest"
    ),
    replicas: Annotated[int, typer.Option(min=1, help="gateway replicas (HPA minimum)")] = 2,
    max_replicas: Annotated[int, typer.Option(min=1, help="HPA maximum")] = 10,
) -> None:
    """Kubernetes manifests: gateway (+ HPA, Service, pool ConfigMap), Redis, the experts."""
    from deploy.k8s import render_k8s
    from deploy.topology import DeployError
    from experts.errors import PoolConfigError

    try:
        _render(render_k8s(pool, out, image, local_image, replicas, max_replicas))
    except (DeployError, PoolConfigError) as exc:
        raise _fail(exc) from exc


def stale(root: Path) -> list[Path]:
    """The shipped files under `root` that differ from what their pool renders now."""
    from deploy.compose import render_compose

    drifted: list[Path] = []
    for pool, out, prometheus_file in SHIPPED:
        for path, text in render_compose(root / pool, root / out, prometheus_file).items():
            if not path.is_file() or path.read_text() != text:
                drifted.append(path)
    return drifted


@app.command()
def check(
    root: Annotated[Path, typer.Option(help="the repository root")] = Path("."),
) -> None:
    """Exit 1 when a shipped compose file no longer matches its pool file."""
    drifted = stale(root)
    for path in drifted:
        typer.echo(f"stale: {path} (render again: coe deploy compose)", err=True)
    if drifted:
        raise typer.Exit(1)
    typer.echo("the shipped compose files match their pools", err=True)


@app.command()
def expert(
    pool: PoolOption,
    name: Annotated[str, typer.Option(help="the expert to serve")],
    host: Annotated[str | None, typer.Option(help="interface; default: the base_url's")] = None,
    work_dir: Annotated[Path, typer.Option(help="where assembled weights go")] = Path(".coe"),
) -> None:
    """Serve one llama.cpp expert where its base_url says (the CPU stack's expert containers)."""
    from deploy.expert import exec_expert, expert_command
    from deploy.topology import DeployError
    from experts.errors import EngineStartError, PoolConfigError
    from experts.pool import load_pool

    try:
        argv = expert_command(load_pool(pool), name, work_dir, host)
    except (DeployError, PoolConfigError, EngineStartError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"serving {name}: {' '.join(argv)}", err=True)
    exec_expert(argv)
