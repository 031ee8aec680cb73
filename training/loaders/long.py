"""A user's own data in the canonical long format (JSONL, CSV or Parquet), one or more files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.dataset import read_dataset, validate
from training.errors import DataError

__all__ = ["load_long"]


def load_long(sources: Sequence[Path], opts: object) -> dict[str, Any]:
    """`{"all": frame}`: the files concatenated (each validated on its own first)."""
    import pandas as pd

    if not sources:
        raise DataError("<none>", "give at least one .jsonl, .csv or .parquet file")
    frames = [read_dataset(s) for s in sources]
    return {"all": validate(pd.concat(frames, ignore_index=True), ", ".join(map(str, sources)))}
