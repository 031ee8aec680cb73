"""`coe data import`: run a loader, optionally split, write canonical Parquet files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import write_dataset
from training.errors import CoeTrainingError
from training.loaders import LOADERS, LoadOptions

__all__ = ["import_dataset", "split_by_query"]


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


def import_dataset(
    fmt: str,
    sources: Sequence[Path],
    out: Path,
    opts: LoadOptions,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> list[tuple[Path, int, int]]:
    """Write `out/train.parquet` and `out/test.parquet` (or `out/all.parquet` unsplit).

    Returns `(path, rows, queries)` per file written.
    """
    if fmt not in LOADERS:
        raise CoeTrainingError(f"unknown --format {fmt!r}; choose from {sorted(LOADERS)}")
    splits = LOADERS[fmt](list(sources), opts)
    if "all" in splits and test_fraction > 0:
        train, test = split_by_query(splits.pop("all"), test_fraction, seed)
        splits = {"train": train, "test": test}
    written = []
    for name, frame in splits.items():
        path = write_dataset(frame, out / f"{name}.parquet")
        written.append((path, len(frame), int(frame["query_id"].nunique())))
    return written
