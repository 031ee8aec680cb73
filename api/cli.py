"""The `coe` command line: `coe serve` here; training commands come from `training.cli`.

Commands import their heavy dependencies inside their bodies, so `coe --help` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from api.keys_cli import app as keys_app
from api.settings import Settings
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
) -> None:
    """Serve the OpenAI-compatible gateway over a pool of experts (stops them on exit)."""
    import uvicorn

    from api.app import create_app
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
        load_pool(settings.pool)  # fail before binding the port, with the file and field named
    except PoolConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per expert call is noise
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )


app.add_typer(training_app)  # no name: `coe train`, `coe eval`, ... sit beside `coe serve`
app.add_typer(keys_app, name="keys")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
