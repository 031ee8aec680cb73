"""What `coe profile` runs: start the pool, profile it with a progress bar, print a table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from experts.client import Timeouts
from experts.live import LivePool
from experts.pool import load_pool
from training.benchsets import Chooser, load_questions, training_questions
from training.errors import CoeTrainingError
from training.profile import ProfileOptions, ProfileResult, profile_pool, summary

__all__ = ["print_summary", "run_profile"]


async def run_profile(
    pool_file: Path,
    benches: Sequence[str],
    n: int,
    data_dir: Path,
    out: Path,
    *,
    seed: int = 0,
    max_tokens: int = 512,
    concurrency: int | None = None,
    aggregation: bool = True,
    aggregation_n: int | None = None,
    work_dir: Path = Path(".coe"),
    read_timeout_s: float = 300.0,
    retries: int = 1,
    transport: httpx.AsyncBaseTransport | None = None,
    console: Console | None = None,
    from_training: Path | None = None,
    grader: str = "auto",
    select: str = "random",
    base: Path | None = None,
) -> ProfileResult:
    """Load the pool and questions (failing early on either), start the experts, profile.

    With `from_training` (a router's training file) the `n` questions are drawn from its
    queries instead of `benches` (`training.benchsets.training_questions`), so the dataset
    written feeds `coe train --base ROUTER --add OUT/dataset.parquet` with queries the router
    remembers; `select` other than random picks them by the design of the router in `base`
    (`ClusterRouter.select_training_profile`: doptimal, stratified)."""
    console = console or Console(stderr=True)
    config = load_pool(pool_file)
    if from_training is None:
        questions = load_questions(list(benches), data_dir, n, seed)
    else:
        drawn = training_questions(from_training, n, seed, grader, _chooser(select, base))
        questions = drawn.questions
        console.print(
            f"{len(questions)} of {drawn.candidates} queries of {from_training} with a gold "
            f"answer (from its {drawn.gold_from})"
            + (
                f"; {drawn.no_gold} without one are not drawn (no recorded model got them "
                "right): re-import the file with `coe data import` to get its gold column"
                if drawn.no_gold
                else ""
            )
        )
    options = ProfileOptions(
        max_tokens=max_tokens,
        concurrency=concurrency,
        aggregation=aggregation,
        aggregation_n=aggregation_n,
        retries=retries,
    )
    timeouts = Timeouts(read=read_timeout_s)
    columns = (
        TextColumn("{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    async with LivePool(config, work_dir, timeouts, transport=transport) as pool:
        with Progress(*columns, console=console) as bar:
            tasks: dict[str, TaskID] = {}

            def update(label: str, done: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=total)
                bar.update(tasks[label], completed=done, total=total)

            result = await profile_pool(pool, questions, out, options, update)
    print_summary(result, console)
    return result


def _chooser(select: str, base: Path | None) -> Chooser | None:
    """How `--select` picks the profiled training queries: None (a seeded random sample), or
    the trained router's own design."""
    if select == "random":
        return None
    if base is None:
        raise CoeTrainingError(f"--select {select} needs the router: pass --base ROUTER.pkl")
    from training.fitting import load_router

    router = load_router(base)
    chooser = getattr(router, "select_training_profile", None)
    if chooser is None:
        raise CoeTrainingError(
            f"a {router.name!r} router has no profile design; use --select random"
        )

    def choose(ids: list[str], prompts: list[str], n: int, seed: int) -> Sequence[int]:
        try:
            return list(chooser(ids, prompts, n, select, seed))
        except ValueError as exc:  # OnboardingError, an unknown method
            raise CoeTrainingError(f"{base}: {exc}") from exc

    return choose


def print_summary(result: ProfileResult, console: Console) -> None:
    table = Table(title="coe profile")
    rows = summary(result)
    tasks = sorted({t for r in rows for t in r["tasks"]})
    for column in ("expert", "n", "accuracy", *tasks, "aggregating", "USD/query", "s/query"):
        table.add_column(column)
    for r in rows:
        agg = "-" if r["aggregation"] is None else f"{r['aggregation']:.3f}"
        latency = "-" if r["mean_latency_s"] is None else f"{r['mean_latency_s']:.2f}"
        table.add_row(
            r["expert"],
            str(r["n"]),
            f"{r['accuracy']:.3f}",
            *(f"{r['tasks'][t]:.3f}" if t in r["tasks"] else "-" for t in tasks),
            agg,
            f"{r['mean_cost_usd']:.3g}",
            latency,
        )
    console.print(table)
    if result.dataset is not None:
        console.print(
            f"wrote {result.dataset}: train a router with `coe train --train ...`, or add its "
            "experts to one with `coe train --base ROUTER.pkl --add ...`"
        )
    if result.aggregation is not None:
        console.print(f"wrote {result.aggregation}: name it as compose.aggregation_profile")
    if result.incomplete:
        console.print(
            f"{result.incomplete} question(s) lack an answer from some expert (it was down): "
            "run the same command again to finish them"
        )
