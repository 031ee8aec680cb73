"""Training and evaluating routers from canonical files (what `coe train` and `coe eval` run)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.base import Router
from router.data import RoutingData
from training.dataset import costs_are_estimated, read_dataset, to_routing_data
from training.embed import embed_prompts
from training.errors import CoeTrainingError
from training.evaluate import RouterResult, build_router, evaluate_scores, reference_results
from training.report import build_report, write_report
from training.rl_eval import evaluate_steps, is_multi_step
from training.tokens import DEFAULT_OUTPUT_TOKENS

__all__ = ["family_params", "fit_router", "run_eval", "train_router"]

#: Names `coe eval` computes as references on the test set rather than as trained routers.
REFERENCES = ("best_single", "oracle")


def fit_router(
    name: str, data: RoutingData, embeddings: Any, params: dict[str, Any], seed: int
) -> Router:
    """A router of family `name` fitted on `data` (`seed` passed where the family takes one)."""
    router = build_router(name, params)
    if "seed" in inspect.signature(type(router).__init__).parameters and "seed" not in params:
        router = build_router(name, {**params, "seed": seed})
    fitted: Router = router.fit(data, embeddings)
    return fitted


def family_params(
    name: str, params: dict[str, Any], cost_weight: float | None, out: Path
) -> dict[str, Any]:
    """`params` plus what `coe train` options mean for family `name`: `--cost-weight` for a
    family trained with cost in its objective, and a run folder beside `out` for one that
    writes checkpoints and learning curves (`router.pkl` → `router_run/`)."""
    accepted = inspect.signature(type(build_router(name)).__init__).parameters
    hyper = dict(params)
    if cost_weight is not None:
        if "cost_weight" not in accepted:
            raise CoeTrainingError(
                f"--cost-weight applies to routers trained with cost in the objective (rl), "
                f"not {name!r}: give the cost weight when serving or evaluating instead"
            )
        hyper["cost_weight"] = cost_weight
    if "run_dir" in accepted and "run_dir" not in hyper:
        hyper["run_dir"] = str(out.with_name(f"{out.stem}_run"))
    return hyper


def train_router(
    train_file: Path, name: str, params: dict[str, Any], seed: int, cache_dir: Path | None
) -> Router:
    """Read, embed (cached, with a progress bar) and fit."""
    data = to_routing_data(read_dataset(train_file), train_file)
    router = build_router(name, params)
    embeddings = (
        embed_prompts(data.prompts, cache_dir=cache_dir, description="embedding train")
        if router.uses_embeddings
        else None
    )
    if getattr(router, "progress", False):  # the family shows its own progress bar
        return fit_router(name, data, embeddings, params, seed)
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True) as bar:
        bar.add_task(f"training {name}", total=None)
        return fit_router(name, data, embeddings, params, seed)


def run_eval(
    train_file: Path,
    test_file: Path,
    names: Sequence[str],
    out_dir: Path,
    seed: int,
    cache_dir: Path | None,
    params: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Fit each named router on the train file, evaluate on the test file, write the report.

    `params` maps a family to its hyperparameters (`coe eval --params`); others use defaults.
    """
    params = params or {}
    train_frame, test_frame = read_dataset(train_file), read_dataset(test_file)
    train = to_routing_data(train_frame, train_file)
    test = to_routing_data(test_frame, test_file, models=train.models)
    from training.strategy_eval import evaluate_strategy, is_strategy

    for name in names:
        if name not in REFERENCES and not is_strategy(name):
            try:  # fail on a bad name or parameter before minutes of embedding
                build_router(name, params.get(name))
            except TypeError as exc:
                raise CoeTrainingError(f"bad parameters for router {name!r}: {exc}") from exc
    x_train = embed_prompts(train.prompts, cache_dir=cache_dir, description="embedding train")
    x_test = embed_prompts(test.prompts, cache_dir=cache_dir, description="embedding test")
    cost_scale = float(train.costs.max(axis=1).mean())
    results: dict[str, RouterResult] = {}
    for name in names:
        if name in REFERENCES:
            continue
        if is_strategy(name):  # vote, cascade: run on the recorded replies, call by call
            results[name] = evaluate_strategy(
                name, train, x_train, test, x_test, params.get(name), seed
            )
            continue
        router = fit_router(name, train, x_train, params.get(name, {}), seed)
        results[name] = evaluate_scores(router.score(x_test, test.prompts), test, cost_scale)
        if is_multi_step(router):  # a policy that may call several experts: run its episodes
            results[f"{name}-steps"] = evaluate_steps(router, x_test, test)
    results.update(reference_results(test, cost_scale))
    estimated = costs_are_estimated(train_frame) or costs_are_estimated(test_frame)
    dataset = {
        "train": str(train_file),
        "test": str(test_file),
        "name": Path(test_file).parent.name or Path(test_file).stem,
        "n_train": len(train),
        "n_test": len(test),
        "models": list(train.models),
        "costs_estimated": estimated,
        "cost_note": (
            "list price × (prompt tokens counted with the all-MiniLM-L6-v2 WordPiece tokenizer "
            "+ completion tokens counted from responses where the source has them, else "
            f"assumed: {DEFAULT_OUTPUT_TOKENS} unless `coe data import --output-tokens` said "
            "otherwise)"
            if estimated
            else ""
        ),
    }
    report = build_report(results, test, dataset, cost_scale)
    return report, write_report(report, out_dir)
