"""RouterBench's published wide CSV: one row per prompt, three columns per model.

Columns: `sample_id, prompt, eval_name, <model>, <model>|model_response, <model>|total_cost,
oracle_model_to_route_to`. `prompt` is a stringified Python list of strings (the turns), joined
here with blank lines. A model is any column `M` with a matching `M|total_cost`. Costs are real
(measured), so `cost_estimated` is False. Each model's reply (`M|model_response`) is kept as
`response`.

Real files have holes: a row where some model has no score or no cost stops the import, unless
`LoadOptions.on_missing` is `"drop"` (`--on-missing drop`), which drops those queries for every
model and notes how many went.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.dataset import validate
from training.errors import DataError
from training.loaders.common import LoadOptions

__all__ = ["load_routerbench", "parse_prompt"]

_REQUIRED = ("sample_id", "prompt", "eval_name")


def parse_prompt(text: str) -> str:
    """`"['turn 1', 'turn 2']"` → `"turn 1\\n\\nturn 2"`; a plain string is kept as it is."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return text
    value = ast.literal_eval(stripped)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("prompt list must hold strings")
    return "\n\n".join(value)


def _load_one(path: Path, opts: LoadOptions) -> Any:
    import pandas as pd

    try:
        wide = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise DataError(path, f"cannot be read as CSV: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in wide.columns]
    if missing:
        raise DataError(path, f"missing RouterBench column(s) {missing}")
    models = [c for c in wide.columns if "|" not in c and f"{c}|total_cost" in wide.columns]
    orphans = [c for c in wide.columns if c.endswith("|model_response") and c[:-15] not in models]
    if not models:
        raise DataError(path, "no model columns: expected '<model>' with '<model>|total_cost'")
    if orphans:
        raise DataError(
            path, f"responses without cost columns: {orphans}; add '<model>|total_cost'"
        )
    rows: list[dict[str, Any]] = []
    dropped = 0
    for i, rec in enumerate(wide.to_dict("records"), start=1):
        try:
            prompt = parse_prompt(str(rec["prompt"]))
        except (ValueError, SyntaxError) as exc:
            raise DataError(path, f"prompt is not a Python list of strings: {exc}", i) from exc
        hole = _first_hole(rec, models)
        if hole is not None and opts.on_missing == "drop":
            dropped += 1
            continue
        if hole is not None:
            raise DataError(path, f"{hole}; to drop such queries, use --on-missing drop", i)
        for model in models:
            score, cost = rec[model], rec[f"{model}|total_cost"]
            response = rec.get(f"{model}|model_response")
            rows.append(
                {
                    "query_id": str(rec["sample_id"]),
                    "prompt": prompt,
                    "task": str(rec["eval_name"]),
                    "model": model,
                    "score": float(score),
                    "cost_usd": float(cost),
                    "cost_estimated": False,
                    "response": None if pd.isna(response) else str(response),
                }
            )
    if opts.on_missing == "drop":
        opts.notes.append(
            f"{path}: dropped {dropped} of {len(wide)} queries where some model has no score "
            "or cost (--on-missing drop)"
        )
    if not rows:
        raise DataError(path, "no query has a score and a cost for every model")
    return validate(pd.DataFrame(rows), path)


def _first_hole(rec: dict[str, Any], models: Sequence[str]) -> str | None:
    """What is missing in a row (the first model without a score or a cost), or None."""
    import pandas as pd

    for model in models:
        if pd.isna(rec[model]):
            return f"model {model!r} has no score (NaN)"
        if pd.isna(rec[f"{model}|total_cost"]):
            return f"model {model!r} has no cost ({model}|total_cost)"
    return None


def load_routerbench(sources: Sequence[Path], opts: LoadOptions) -> dict[str, Any]:
    """`{"all": frame}` from one or more RouterBench CSV files."""
    import pandas as pd

    if not sources:
        raise DataError("<none>", "give at least one RouterBench CSV")
    frames = [_load_one(Path(s), opts) for s in sources]
    return {"all": validate(pd.concat(frames, ignore_index=True), ", ".join(map(str, sources)))}
