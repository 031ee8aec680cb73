"""The `coe` command line: `coe serve` here; training commands come from `training.cli`.

Commands import their heavy dependencies inside their bodies, so `coe --help` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from api.keys_cli import RedisUrl
from api.keys_cli import app as keys_app
from api.settings import Settings
from deploy.cli import app as deploy_app
from training.cli import app as training_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="coe",
    help="Composition of Experts: route each query to the LLM that answers it best for the money.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Composition of Experts: route each query to the LLM that answers it best for the money."""


@app.command()
def serve(
    pool: Annotated[Path | None, typer.Option(help="pool file (YAML); default COE_POOL")] = None,
    host: Annotated[str | None, typer.Option(help="interface to bind; default COE_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="port; default COE_PORT")] = None,
    router_artifact: Annotated[
        Path | None, typer.Option(help="trained router from `coe train`")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="gateway processes (more than one needs COE_REDIS_URL)")
    ] = 1,
) -> None:
    """Serve the OpenAI-compatible gateway over a pool of experts (stops them on exit)."""
    import uvicorn

    from api.app import create_app
    from api.workers import WorkersRefused, check_workers, serve_workers
    from experts.errors import PoolConfigError
    from experts.pool import load_pool

    overrides: dict[str, Any] = {
        "pool": pool,
        "host": host,
        "port": port,
        "router_artifact": router_artifact,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        # fail before binding the port, with the file and field named
        check_workers(settings, workers, load_pool(settings.pool))
    except (PoolConfigError, WorkersRefused) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per expert call is noise
    if workers > 1:
        serve_workers(settings, workers)
        return
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        loop=settings.loop,
        timeout_graceful_shutdown=10,
    )


@app.command()
def batch(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT.jsonl", help="OpenAI batch lines")],
    output: Annotated[Path, typer.Option("-o", "--output", help="results, one per input line")],
    pool: Annotated[Path | None, typer.Option(help="pool file (YAML); default COE_POOL")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="calls in flight per expert group")] = 4,
    router_artifact: Annotated[
        Path | None, typer.Option(help="trained router from `coe train`")
    ] = None,
    progress: Annotated[bool, typer.Option(help="a progress bar per expert")] = True,
) -> None:
    """Answer a JSONL file of chat requests, grouped by expert so each is woken once (resumable)."""
    import asyncio

    from api.batch import run_batch
    from experts.errors import PoolConfigError
    from experts.pool import load_pool

    overrides: dict[str, Any] = {"pool": pool, "router_artifact": router_artifact}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if not input_path.is_file():
        typer.echo(f"error: {input_path}: input file not found", err=True)
        raise typer.Exit(2)
    try:
        load_pool(settings.pool)
    except PoolConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = asyncio.run(run_batch(settings, input_path, output, concurrency, progress))
    typer.echo(
        f"{summary.lines} lines: {summary.ok} answered, {summary.skipped} already done, "
        f"{summary.failed} failed, {summary.malformed} malformed; by expert: "
        + (", ".join(f"{e} {n}" for e, n in summary.by_expert.items()) or "none")
        + f"; {summary.wakes} expert wakes; results in {output}",
        err=True,
    )
    if summary.failed or summary.malformed:
        raise typer.Exit(1)


@app.command()
def report(
    window: Annotated[str, typer.Option(help="how far back: 5m, 15m, 1h, 6h or 24h")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    redis_url: RedisUrl = None,
) -> None:
    """Requests, errors, cost and latency per expert and per API key, from the request log in
    the Redis that COE_REDIS_URL names."""
    from api.report_cli import report as run_report

    run_report(window, as_json, redis_url)


app.add_typer(training_app)  # no name: `coe train`, `coe eval`, ... sit beside `coe serve`
app.add_typer(keys_app, name="keys")
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
