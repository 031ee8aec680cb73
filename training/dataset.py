"""The canonical routing dataset: one row per (query, model), and its conversion to `RoutingData`.

Columns (DESIGN.md "Data"):

==================  =======  ===============================================================
column              type     meaning
==================  =======  ===============================================================
query_id            str      identifies the query; unique together with `model`
prompt              str      the text a router sees
task                str?     task or subject label (empty / null where the source has none)
model               str      the expert's name
score               float    quality in [0, 1] (1 = correct)
cost_usd            float    USD the call cost (or is estimated to cost)
cost_estimated      bool     True where `cost_usd` was estimated rather than measured
latency_s           float?   optional
response            str?     optional
input_price         float?   optional, USD per 1M input tokens (the same on every row of a model)
output_price        float?   optional, USD per 1M output tokens
descriptor          str?     optional, free text about the model (the same on every row of it)
answer              str?     optional, the final answer extracted from `response`
gold                str?     optional, the query's right answer (the same on every row of it;
                             `coe profile --from-training` grades a new expert against it)
==================  =======  ===============================================================

Row numbers in errors count data rows from 1 in file order (a CSV header is not a row).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from training.errors import DataError

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "costs_are_estimated",
    "read_dataset",
    "to_routing_data",
    "validate",
    "write_dataset",
]

REQUIRED_COLUMNS = ("query_id", "prompt", "task", "model", "score", "cost_usd")
OPTIONAL_COLUMNS = (
    "cost_estimated",
    "latency_s",
    "response",
    "input_price",
    "output_price",
    "descriptor",
    "answer",
    "gold",
)


def validate(frame: Any, source: str | Path) -> Any:
    """Check a canonical frame and return it normalised (types, `cost_estimated` filled).

    Raises `DataError` naming `source` and the first bad row: missing columns, empty ids,
    NaN or out-of-range scores, a model with no cost, duplicate (query, model) pairs.
    """
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            source,
            f"missing column(s) {missing}; a routing dataset needs {list(REQUIRED_COLUMNS)} "
            "(one row per query × model)",
        )
    df = frame.reset_index(drop=True).copy()
    if "cost_estimated" not in df.columns:
        df["cost_estimated"] = False
    for col in ("query_id", "prompt", "model"):
        bad = df[col].isna() | (df[col].astype(str).str.len() == 0)
        _fail_first(bad, source, f"empty {col!r}")
        df[col] = df[col].astype(str)
    df["task"] = df["task"].astype(object).where(df["task"].notna(), None)
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    _fail_first(df["score"].isna(), source, "score is missing or not a number (NaN)")
    out_of_range = (df["score"] < 0) | (df["score"] > 1)
    _fail_first(out_of_range, source, "score outside [0, 1]: rescale scores to 0..1")
    df["cost_usd"] = pd.to_numeric(df["cost_usd"], errors="coerce")
    no_cost = df["cost_usd"].isna() | (df["cost_usd"] < 0)
    if no_cost.any():
        i = int(np.flatnonzero(no_cost.to_numpy())[0])
        raise DataError(
            source,
            f"model {df['model'][i]!r} has no cost (cost_usd missing or negative); give every "
            "row a cost, estimated from prices and tokens if need be",
            row=i + 1,
        )
    dup = df.duplicated(["query_id", "model"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = df.index[(df["query_id"] == df["query_id"][i]) & (df["model"] == df["model"][i])]
        raise DataError(
            source,
            f"duplicate (query_id, model) = ({df['query_id'][i]!r}, {df['model'][i]!r}); "
            f"first seen at row {int(first[0]) + 1}: keep one score per query and model",
            row=i + 1,
        )
    df["cost_estimated"] = df["cost_estimated"].fillna(False).astype(bool)
    return df


def _fail_first(mask: Any, source: str | Path, message: str) -> None:
    if mask.any():
        raise DataError(source, message, row=int(np.flatnonzero(mask.to_numpy())[0]) + 1)


def read_dataset(path: str | Path) -> Any:
    """Read and validate a canonical file (.parquet, .jsonl, .json lines, .csv)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file; create it with `coe data import`")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(p, lines=True, dtype=False)
        elif suffix == ".csv":
            frame = pd.read_csv(p, keep_default_na=True)
        else:
            raise DataError(p, f"unknown extension {suffix!r}: use .parquet, .jsonl or .csv")
    except (ValueError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(p, f"cannot be parsed as {suffix[1:]}: {exc}") from exc
    return validate(frame, p)


def write_dataset(frame: Any, path: str | Path) -> Path:
    """Write a canonical frame as Parquet (creating the folder)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(p, index=False)
    return p


def costs_are_estimated(frame: Any) -> bool:
    """True if any cost in the frame was estimated rather than measured."""
    return bool(frame["cost_estimated"].any())


def to_routing_data(
    frame: Any, source: str | Path = "<dataset>", models: Sequence[str] | None = None
) -> RoutingData:
    """Pivot a validated canonical frame into `RoutingData` (queries in first-seen order).

    `models` fixes the column order (e.g. a trained router's `models_`); by default models
    come in first-seen order. Every query must have a row for every model.
    """
    df = frame
    order = list(dict.fromkeys(df["model"])) if models is None else list(models)
    unknown = sorted(set(df["model"]) - set(order))
    if unknown:
        raise DataError(source, f"models {unknown} are not in the router's pool {order}")
    queries = list(dict.fromkeys(df["query_id"]))
    scores = df.pivot(index="query_id", columns="model", values="score")
    costs = df.pivot(index="query_id", columns="model", values="cost_usd")
    scores = scores.reindex(index=queries, columns=order)
    costs = costs.reindex(index=queries, columns=order)
    holes = scores.isna().to_numpy()
    if holes.any():
        i, j = (int(v) for v in np.argwhere(holes)[0])
        raise DataError(
            source,
            f"query {queries[i]!r} has no row for model {order[j]!r}; every query needs a "
            f"score for every model ({int(holes.sum())} pairs missing in all)",
        )
    first = df.drop_duplicates("query_id").set_index("query_id").reindex(queries)
    return RoutingData(
        query_ids=queries,
        prompts=first["prompt"].tolist(),
        tasks=[t if isinstance(t, str) and t else None for t in first["task"].tolist()],
        models=order,
        scores=scores.to_numpy(dtype=np.float64),
        costs=costs.to_numpy(dtype=np.float64),
        experts=_experts(df, order),
        responses=_responses(df, queries, order),
        prompt_tokens=np.asarray(_counter().count(first["prompt"].tolist()), dtype=np.float64),
    )


@functools.cache
def _counter() -> Any:
    """The prompt token counter the loaders estimate costs with (loaded once)."""
    from training.tokens import TokenCounter

    return TokenCounter()


def _responses(df: Any, queries: Sequence[str], models: Sequence[str]) -> np.ndarray | None:
    """`(n, m)` object array of response texts (None where missing), or None when the frame
    records no response at all."""
    if "response" not in df.columns or not df["response"].notna().any():
        return None
    table = df.pivot(index="query_id", columns="model", values="response")
    table = table.reindex(index=queries, columns=list(models))
    out: np.ndarray = table.to_numpy(dtype=object, copy=True)  # pandas 3: else a read-only view
    out[~np.vectorize(lambda v: isinstance(v, str), otypes=[bool])(out)] = None
    return out


def _experts(df: Any, models: Sequence[str]) -> list[ExpertDescriptor]:
    """Descriptors from the price and descriptor columns; 0.0 / "" where the data has none."""
    has_prices = "input_price" in df.columns and "output_price" in df.columns
    experts = []
    for name in models:
        rows = df[df["model"] == name]
        if has_prices and rows["input_price"].notna().any():
            inp = float(rows["input_price"].dropna().iloc[0])
            out = float(rows["output_price"].dropna().iloc[0])
        else:
            inp = out = 0.0
        text = ""
        if "descriptor" in df.columns and rows["descriptor"].notna().any():
            text = str(rows["descriptor"].dropna().iloc[0])
        experts.append(
            ExpertDescriptor(name=name, input_price=inp, output_price=out, descriptor=text)
        )
    return experts
