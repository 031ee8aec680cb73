"""`coe data import`, `coe train`, `coe eval`, `coe calibrate`, `coe profile`: the training CLI.

`app` is a `typer.Typer`; the root `coe` CLI mounts it. Importing this module is cheap: pandas,
scikit-learn and torch load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(
    help="Build routing datasets, train routers and evaluate them.", no_args_is_help=True
)
data_app = typer.Typer(help="Routing datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DEFAULT_ROUTERS = "cluster,knn,classifier,category,mf,skills,ensemble,random,cheapest"
CacheOpt = Annotated[
    Path, typer.Option("--embed-cache", help="Embedding cache folder (reused across runs).")
]


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter("--params must be a JSON object, e.g. '{\"k\": 20}'")
    return value


def _family_params(text: str | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """`coe eval --params`: a JSON object of family → hyperparameters, for families named."""
    value = _params(text)
    for family, hyper in value.items():
        if family not in names:
            raise typer.BadParameter(f"--params names {family!r}, which --routers does not list")
        if not isinstance(hyper, dict):
            raise typer.BadParameter(f"--params[{family!r}] must be a JSON object")
    return value


@data_app.command("import")
def data_import(
    sources: Annotated[list[Path], typer.Argument(help="Source files or folders.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="llmrouter | routellm | routerbench | long | mmlu-pro | zeroeval"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the canonical files.")],
    test_fraction: Annotated[
        float, typer.Option(help="Without a published split: hold out this share of queries.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    output_tokens: Annotated[
        int, typer.Option(help="Completion tokens assumed where a source has no responses.")
    ] = 256,
    include_contaminated: Annotated[
        bool, typer.Option(help="Keep RouteLLM's contaminated prompts.")
    ] = False,
    prices: Annotated[
        Path | None,
        typer.Option(help="prices.json (USD per 1M tokens) for mmlu-pro and zeroeval sources."),
    ] = None,
    on_missing: Annotated[
        str,
        typer.Option(
            help="A query some model has no score for: 'error' stops, 'drop' removes the query."
        ),
    ] = "error",
) -> None:
    """Convert benchmark files into canonical Parquet: DIR/train.parquet (+ DIR/test.parquet),
    and DIR/import_summary.txt (what was dropped, per-model accuracy and mean cost)."""
    from training.errors import CoeTrainingError
    from training.importing import import_dataset
    from training.loaders import LoadOptions

    if on_missing not in ("error", "drop"):
        raise typer.BadParameter("--on-missing must be 'error' or 'drop'")
    opts = LoadOptions(
        output_tokens=output_tokens,
        include_contaminated=include_contaminated,
        prices=prices,
        on_missing="drop" if on_missing == "drop" else "error",
    )
    try:
        written = import_dataset(fmt, sources, out, opts, test_fraction=test_fraction, seed=seed)
    except CoeTrainingError as exc:
        raise _fail(exc) from exc
    for line in opts.notes:
        typer.echo(line)
    for path, n_rows, n_queries in written:
        typer.echo(f"wrote {path}: {n_rows} rows, {n_queries} queries")


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Where to write the router artifact.")],
    train_file: Annotated[
        Path | None, typer.Option("--train", help="Canonical training file.")
    ] = None,
    router: Annotated[
        str | None,
        typer.Option(
            "--router", help="Router family (see `coe eval`), or auto: chosen by CV on --train."
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="A trained router to extend with --add (no retraining)."),
    ] = None,
    add: Annotated[
        Path | None,
        typer.Option("--add", help="Profile of new experts (≤ 100 queries do), with --base."),
    ] = None,
    params: Annotated[str | None, typer.Option(help="Hyperparameters as JSON.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for routers that draw randomness.")] = 0,
    embed_cache: CacheOpt = Path(".cache/coe/embeddings"),
    cost_weight: Annotated[
        float | None,
        typer.Option(
            "--cost-weight", min=0.0, help="λ in the reward score − λ·cost/scale (rl only)."
        ),
    ] = None,
) -> None:
    """Fit one router on a canonical dataset and save it (the gateway loads it); or, with
    --base and --add, add the experts profiled in --add to a trained router."""
    from training.errors import CoeTrainingError
    from training.fitting import add_experts, family_params, train_router

    if (base is None) != (add is None):
        raise typer.BadParameter("--base and --add go together")
    if base is not None and add is not None:
        try:
            grown = add_experts(base, add, embed_cache)
        except CoeTrainingError as exc:
            raise _fail(exc) from exc
        out.parent.mkdir(parents=True, exist_ok=True)
        grown.save(out)
        typer.echo(f"wrote {out}: {grown.name} router for {len(grown.models_)} experts")
        return
    if train_file is None or router is None:
        raise typer.BadParameter("give --train and --router (or --base and --add)")
    try:
        hyper = family_params(router, _params(params), cost_weight, out)
        fitted = train_router(train_file, router, hyper, seed, embed_cache)
    except CoeTrainingError as exc:
        raise _fail(exc) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    fitted.save(out)
    if fitted.selection_ is not None:  # --router auto: the CV table it chose by
        from training.auto import selection_table

        typer.echo(selection_table(fitted.selection_))
    typer.echo(
        f"wrote {out}: {fitted.name} router for {len(fitted.models_)} experts {fitted.models_}"
    )


@app.command("eval")
def eval_(
    train_file: Annotated[Path, typer.Option("--train", help="Canonical training file.")],
    test_file: Annotated[Path, typer.Option("--test", help="Canonical test file.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder.")],
    routers: Annotated[
        str, typer.Option(help="Comma-separated router families.")
    ] = DEFAULT_ROUTERS,
    seed: Annotated[int, typer.Option(help="Seed for routers that draw randomness.")] = 0,
    embed_cache: CacheOpt = Path(".cache/coe/embeddings"),
    params: Annotated[
        str | None,
        typer.Option(
            help='Hyperparameters per family as JSON, e.g. \'{"rl": {"validation": 0.2}}\'.'
        ),
    ] = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="How the calibrated points are chosen on --train: split (one 20% validation "
            "split, 1 extra fit; the default) or cv (5-fold out-of-fold, 5 extra fits per entry)."
        ),
    ] = "split",  # training.calibrate.DEFAULT_CALIBRATION
) -> None:
    """Train each router on --train, sweep cost_weight on --test, write report.json + plots."""
    from training.errors import CoeTrainingError
    from training.fitting import run_eval
    from training.report import markdown_table

    names = [r.strip() for r in routers.split(",") if r.strip()]
    try:
        report, written = run_eval(
            train_file,
            test_file,
            names,
            out,
            seed,
            embed_cache,
            _family_params(params, names),
            calibration,
        )
    except CoeTrainingError as exc:
        raise _fail(exc) from exc
    typer.echo(markdown_table(report))
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def calibrate(
    router_file: Annotated[Path, typer.Option("--router", help="A trained router artifact.")],
    data: Annotated[Path, typer.Option("--data", help="Held-out canonical data.")],
    cost_share: Annotated[
        float | None, typer.Option(help="Target mean cost as a share of the strongest model's.")
    ] = None,
    quality_share: Annotated[
        float | None, typer.Option(help="Target accuracy as a share of the strongest model's.")
    ] = None,
    embed_cache: CacheOpt = Path(".cache/coe/embeddings"),
) -> None:
    """Find the cost_weight that meets a cost or quality target on held-out data."""
    from training.calibrate import calibrate_file
    from training.errors import CoeTrainingError

    if (cost_share is None) == (quality_share is None):
        raise typer.BadParameter("give exactly one of --cost-share or --quality-share")
    try:
        result = calibrate_file(router_file, data, cost_share, quality_share, embed_cache)
    except CoeTrainingError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


@app.command()
def profile(
    pool: Annotated[Path, typer.Option("--pool", help="Pool file (YAML) of the experts.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumed if present).")],
    bench: Annotated[
        str, typer.Option(help="Comma-separated benches (see training/benchsets.py).")
    ] = "gsm8k,mmlu_pro,medmcqa,gpqa,humaneval",
    n: Annotated[
        int | None,
        typer.Option(
            min=1, help="Questions per bench (a seeded sample); default 20, 100 --from-training."
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="The benchsets folder with the gold-answer files.")
    ] = Path("../shared/data/benchsets"),
    seed: Annotated[int, typer.Option(help="Seed of the question sample.")] = 0,
    max_tokens: Annotated[int, typer.Option(min=1, help="Completion limit per call.")] = 512,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Calls in flight per expert; default its pool's.")
    ] = None,
    aggregation: Annotated[
        bool, typer.Option(help="Also measure each expert as aggregator of the others.")
    ] = True,
    aggregation_n: Annotated[
        int | None, typer.Option(min=1, help="Questions per bench for the aggregation profile.")
    ] = None,
    work_dir: Annotated[Path, typer.Option(help="Local experts' logs and weights.")] = Path(".coe"),
    read_timeout_s: Annotated[float, typer.Option(help="Per call, seconds.")] = 300.0,
    from_training: Annotated[
        Path | None,
        typer.Option(
            help="Draw the --n questions from this routing dataset (a router's training file) "
            "instead of --bench, so `coe train --base --add` onboards from queries it knows."
        ),
    ] = None,
    grader: Annotated[
        str,
        typer.Option(
            help="With --from-training: auto (from the gold answer), choice, number or math."
        ),
    ] = "auto",
    select: Annotated[
        str | None,
        typer.Option(
            help="With --from-training: random, or by the --base router's design: "
            "half-doptimal (half random, half the queries that tell most about a newcomer; "
            "the default with --base, chosen by CV on the MMLU-Pro training file), doptimal, "
            "doptimal-cf, stratified. Default: half-doptimal with --base, else random."
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(help="The router to add the expert to (its design picks the queries)."),
    ] = None,
) -> None:
    """Run every expert of a pool on gold-answer questions, grade, and write a routing dataset
    (OUT/dataset.parquet, for `coe train`) and the aggregation profile (OUT/aggregation.json).
    A new expert's profile for `coe train --base ROUTER --add OUT/dataset.parquet`: a pool file
    of that expert, `--from-training` the router's training file, `--n 100`."""
    import asyncio

    from experts.errors import EngineStartError, PoolConfigError
    from training.errors import CoeTrainingError
    from training.profile_cli import run_profile

    benches = [b.strip() for b in bench.split(",") if b.strip()]
    try:
        asyncio.run(
            run_profile(
                pool,
                benches,
                n or (20 if from_training is None else 100),
                data_dir,
                out,
                seed=seed,
                max_tokens=max_tokens,
                concurrency=concurrency,
                aggregation=aggregation,
                aggregation_n=aggregation_n,
                work_dir=work_dir,
                read_timeout_s=read_timeout_s,
                from_training=from_training,
                grader=grader,
                select=select or ("random" if base is None else "half-doptimal"),
                base=base,
            )
        )
    except (CoeTrainingError, PoolConfigError, EngineStartError) as exc:
        raise _fail(exc) from exc
