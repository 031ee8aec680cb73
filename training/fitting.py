"""Training and evaluating routers from canonical files (what `coe train` and `coe eval` run)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.base import Router
from router.data import RoutingData
from router.embedder import EmbedderRecord
from training.auto import AUTO, check_auto_params, fit_auto
from training.calibrate import (
    CALIBRATIONS,
    DEFAULT_CALIBRATION,
    MATCH_MARGIN,
    best_single_cost,
    calibration_parts,
    choose_points,
    out_of_fold,
)
from training.dataset import costs_are_estimated, read_dataset, to_routing_data
from training.embed import artifact_embedder, embed_prompts, training_embedder
from training.errors import CoeTrainingError
from training.evaluate import (
    COST_WEIGHTS,
    RouterResult,
    build_router,
    evaluate_curve,
    reference_results,
    router_curve,
)
from training.report import build_report, write_report
from training.rl_eval import evaluate_steps, is_multi_step
from training.tokens import DEFAULT_OUTPUT_TOKENS

__all__ = [
    "add_experts",
    "calibrated_on_test",
    "family_params",
    "fit_router",
    "load_router",
    "run_eval",
    "train_router",
]

#: Names `coe eval` computes as references on the test set rather than as trained routers.
REFERENCES = ("best_single", "oracle")

#: Share of the training queries `coe eval` holds out to choose the calibrated λ.
VALIDATION_FRACTION = 0.2


def fit_router(
    name: str, data: RoutingData, embeddings: Any, params: dict[str, Any], seed: int
) -> Router:
    """A router of family `name` fitted on `data` (`seed` passed where the family takes one).

    `name` may be `auto` (`training.auto`): the family chosen by CV on `data`, fitted."""
    if name == AUTO:
        return fit_auto(data, embeddings, params, seed)
    router = build_router(name, params)
    if "seed" in inspect.signature(type(router).__init__).parameters and "seed" not in params:
        router = build_router(name, {**params, "seed": seed})
    fitted: Router = router.fit(data, embeddings)
    return fitted


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (fit rows, validation rows) of `n` training queries."""
    return calibration_parts(n, "split", seed, fraction=fraction)[0]


def router_sweeper(
    name: str,
    data: RoutingData,
    x: np.ndarray,
    params: dict[str, Any],
    seed: int,
    cost_scale: float,
) -> Any:
    """`training.calibrate.SweepPart` of family `name` on `data`: fitted on the fit rows,
    swept over `COST_WEIGHTS` on the held rows (each query charged its realised outcome)."""

    def sweep_part(fit_rows: np.ndarray, held_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        router = fit_router(name, data.take(fit_rows), x[fit_rows], dict(params), seed)
        held = data.take(held_rows)
        _, picks = router_curve(router, x[held_rows], held, cost_scale)
        rows = np.arange(len(held))
        return (
            np.stack([held.scores[rows, p] for p in picks]),
            np.stack([held.costs[rows, p] for p in picks]),
        )

    return sweep_part


def calibrated_on_test(
    name: str,
    train: RoutingData,
    x_train: np.ndarray,
    params: dict[str, Any],
    seed: int,
    cost_scale: float,
    test: RoutingData,
    test_curve: list[list[float]],
    calibration: str = DEFAULT_CALIBRATION,
    margin: float = MATCH_MARGIN,
) -> dict[str, dict[str, Any] | None]:
    """The deployable operating points of family `name`, λ chosen on the training file only and
    read once off `test_curve` (the curve of the router fitted on all of `train`):

    - `calibrated`: the most accurate λ with mean cost ≤ the best single model's;
    - `calibrated_match`: the cheapest λ with accuracy ≥ the best single model's
      (+ `margin` paired SEs, `training.calibrate.choose_points`).

    `calibration="cv"`: λ chosen on the out-of-fold curve of K routers, each fitted on K−1
    folds of `train` (the pooled curve and its best single model cover all of `train`);
    `"split"`: on one `VALIDATION_FRACTION` split (a router fitted on the rest). Nothing from
    `test` enters the choice; `test` only prices the result (cost shares are over its best
    single model's cost)."""
    parts = calibration_parts(len(train), calibration, seed, fraction=VALIDATION_FRACTION)
    sweep_part = router_sweeper(name, train, x_train, params, seed, cost_scale)
    chosen = choose_points(out_of_fold(parts, sweep_part), train, margin)
    test_cost = best_single_cost(test)
    out: dict[str, dict[str, Any] | None] = {}
    for label, index in chosen.items():
        if index is None:
            out[label] = None
            continue
        lam = COST_WEIGHTS[index]
        point = min(test_curve, key=lambda p: abs(p[2] - lam))
        out[label] = {
            "lambda": lam,
            "accuracy": float(point[1]),
            "cost_usd": float(point[0]),
            "cost_share": float(point[0] / test_cost) if test_cost > 0 else None,
            "chosen_by": calibration,
        }
    return out


def family_params(
    name: str, params: dict[str, Any], cost_weight: float | None, out: Path
) -> dict[str, Any]:
    """`params` plus what `coe train` options mean for family `name`: `--cost-weight` for a
    family trained with cost in its objective, and a run folder beside `out` for one that
    writes checkpoints and learning curves (`router.pkl` → `router_run/`)."""
    if name == AUTO:
        if cost_weight is not None:
            raise CoeTrainingError("--cost-weight does not apply to auto: give it when serving")
        check_auto_params(params)
        return dict(params)
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
    """Read, embed (cached, with a progress bar) and fit. A fitted router that reads
    embeddings records the embedder that made them (`Router.embedder_`)."""
    data = to_routing_data(read_dataset(train_file), train_file)
    router = None if name == AUTO else build_router(name, params)
    embedder = training_embedder(cache_dir) if router is None or router.uses_embeddings else None
    embeddings = (
        None
        if embedder is None
        else embed_prompts(data.prompts, embedder, description="embedding train")
    )
    if getattr(router, "progress", False):  # the family shows its own progress bar
        fitted = fit_router(name, data, embeddings, params, seed)
    else:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True) as bar:
            bar.add_task(f"training {name}", total=None)
            fitted = fit_router(name, data, embeddings, params, seed)
    if embedder is not None and fitted.uses_embeddings:
        fitted.embedder_ = EmbedderRecord.of(embedder)
    return fitted


def load_router(path: Path) -> Router:
    """The router pickled at `path`, or a `CoeTrainingError` that says why it is not one."""
    try:
        return Router.load(path)
    except (OSError, ValueError) as exc:
        raise CoeTrainingError(f"{path}: cannot load a router: {exc}") from exc


def add_experts(base_file: Path, add_file: Path, cache_dir: Path | None) -> Router:
    """`coe train --base --add`: the router of `base_file` plus the new experts profiled in
    `add_file` (a canonical file, e.g. `coe profile`'s), without refitting it.

    The profile is embedded with the embedder the base records (a `COE_EMBEDDER` naming another
    is refused); the grown router keeps the base's record (none for a base without one)."""
    base = load_router(base_file)
    adder = getattr(base, "add_experts", None)
    if adder is None:
        raise CoeTrainingError(
            f"a {base.name!r} router cannot take a new expert without retraining; train a "
            "`cluster` router (`coe train --router cluster`) to onboard experts from a profile"
        )
    data = to_routing_data(read_dataset(add_file), add_file)
    embedder = artifact_embedder(base, base_file, cache_dir)  # as its training set was
    embeddings = embed_prompts(data.prompts, embedder, description="embedding profile")
    try:
        grown: Router = adder(data, embeddings)
    except ValueError as exc:
        raise CoeTrainingError(f"{add_file}: {exc}") from exc
    return grown


def run_eval(
    train_file: Path,
    test_file: Path,
    names: Sequence[str],
    out_dir: Path,
    seed: int,
    cache_dir: Path | None,
    params: dict[str, dict[str, Any]] | None = None,
    calibration: str = DEFAULT_CALIBRATION,
) -> tuple[dict[str, Any], list[Path]]:
    """Fit each named router on the train file, evaluate on the test file, write the report.

    `params` maps a family to its hyperparameters (`coe eval --params`); others use defaults.
    `calibration` is how the calibrated points are chosen on the train file (`"cv"`: K-fold
    out-of-fold, `"split"`: one validation split; `training.calibrate.calibration_parts`).
    """
    params = params or {}
    if calibration not in CALIBRATIONS:
        raise CoeTrainingError(f"unknown calibration {calibration!r}; choose from {CALIBRATIONS}")
    train_frame, test_frame = read_dataset(train_file), read_dataset(test_file)
    train = to_routing_data(train_frame, train_file)
    test = to_routing_data(test_frame, test_file, models=train.models)
    from training.strategy_eval import evaluate_strategy, is_strategy

    for name in names:
        if name == AUTO:
            check_auto_params(params.get(name))
        elif name not in REFERENCES and not is_strategy(name):
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
                name, train, x_train, test, x_test, params.get(name), seed, calibration=calibration
            )
            continue
        router = fit_router(name, train, x_train, params.get(name, {}), seed)
        curve, picks = router_curve(router, x_test, test, cost_scale)
        results[name] = evaluate_curve(curve, picks, test)
        results[name].metrics.update(
            calibrated_on_test(
                name,
                train,
                x_train,
                params.get(name, {}),
                seed,
                cost_scale,
                test,
                curve,
                calibration,
            )
        )
        if router.selection_ is not None:  # auto: what it chose, and the CV table it chose by
            results[name].metrics["selected"] = router.selection_
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
        "calibration": calibration,
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
