"""`coe data import`: run a loader, optionally split, write canonical Parquet files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import write_dataset
from training.errors import CoeTrainingError
from training.loaders import LOADERS, LoadOptions

__all__ = ["drop_leaked", "import_dataset", "model_summary", "split_by_query"]

SUMMARY_FILE = "import_summary.txt"


def split_by_query(frame: Any, test_fraction: float, seed: int) -> tuple[Any, Any]:
    """Hold out `test_fraction` of the queries (all their rows), chosen by a seeded shuffle."""
    if not 0.0 < test_fraction < 1.0:
        raise CoeTrainingError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    queries = np.asarray(list(dict.fromkeys(frame["query_id"])))
    rng = np.random.default_rng(seed)
    n_test = max(1, round(len(queries) * test_fraction))
    test_ids = set(rng.permutation(queries)[:n_test].tolist())
    is_test = frame["query_id"].isin(test_ids)
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)


def drop_leaked(train: Any, test: Any) -> tuple[Any, int]:
    """`test` without the queries whose prompt text is a training query's (a source that holds
    the same question under two ids would otherwise test the router on what it was trained on),
    and how many queries that removed."""
    leaked = test["prompt"].isin(set(train["prompt"]))
    n = int(test.loc[leaked, "query_id"].nunique())
    return test[~leaked].reset_index(drop=True), n


def model_summary(frame: Any, name: str) -> list[str]:
    """Lines with each model's accuracy and mean cost per query on one split, best first."""
    table = frame.groupby("model").agg(accuracy=("score", "mean"), cost=("cost_usd", "mean"))
    table = table.sort_values("accuracy", ascending=False)
    n = int(frame["query_id"].nunique())
    oracle = float(frame.groupby("query_id")["score"].max().mean())
    estimated = " (estimated)" if bool(frame["cost_estimated"].any()) else ""
    lines = [f"{name}: {n} queries; oracle accuracy {oracle:.3f}; mean cost per query{estimated}"]
    lines += [
        f"  {model:<34} accuracy {row.accuracy:.3f}  cost ${row.cost:.6f}"
        for model, row in table.iterrows()
    ]
    return lines


def import_dataset(
    fmt: str,
    sources: Sequence[Path],
    out: Path,
    opts: LoadOptions,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> list[tuple[Path, int, int]]:
    """Write `out/train.parquet` and `out/test.parquet` (or `out/all.parquet` unsplit).

    Returns `(path, rows, queries)` per file written. Appends the loader's notes and each
    split's per-model accuracy and mean cost to `opts.notes`, and writes them all to
    `out/import_summary.txt`.
    """
    if fmt not in LOADERS:
        raise CoeTrainingError(f"unknown --format {fmt!r}; choose from {sorted(LOADERS)}")
    splits = LOADERS[fmt](list(sources), opts)
    if "all" in splits and test_fraction > 0:
        opts.notes.extend(model_summary(splits["all"], "all (before the split)"))
        train, test = split_by_query(splits.pop("all"), test_fraction, seed)
        splits = {"train": train, "test": test}
    if "train" in splits and "test" in splits:
        splits["test"], leaked = drop_leaked(splits["train"], splits["test"])
        if leaked:
            opts.notes.append(
                f"{leaked} test {'query' if leaked == 1 else 'queries'} dropped: the same prompt "
                "text is a training query's "
                "under another id (a duplicate in the source)"
            )
    written = []
    for name, frame in splits.items():
        path = write_dataset(frame, out / f"{name}.parquet")
        written.append((path, len(frame), int(frame["query_id"].nunique())))
        opts.notes.extend(model_summary(frame, name))
    (out / SUMMARY_FILE).write_text("\n".join(opts.notes) + "\n")
    return written
