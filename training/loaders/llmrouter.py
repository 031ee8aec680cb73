"""LLMRouter (ulab-uiuc/LLMRouter): 9 open models × 14 tasks, per-query scores.

Source: a folder with `scores_{train,test}.json`, `queries_{train,test}.jsonl` and
`llm_candidates.json`. Scores join queries on the exact question text. Test questions that also
occur in train are dropped. No token counts exist, so cost is estimated as
`(prompt_tokens · input_price + output_tokens · output_price) / 1e6` with prompt tokens counted
by `TokenCounter` and `output_tokens` assumed (`LoadOptions.output_tokens`, 256 by default);
every row is flagged `cost_estimated`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.dataset import validate
from training.errors import DataError
from training.loaders.common import LoadOptions, query_id
from training.tokens import TokenCounter

__all__ = ["load_llmrouter"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(path, "missing: an LLMRouter folder needs scores_*.json") from exc
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc}") from exc


def _read_tasks(path: Path) -> dict[str, str]:
    tasks: dict[str, str] = {}
    if not path.is_file():
        return tasks
    for i, line in enumerate(path.read_text().split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            tasks.setdefault(row["query"], row["task_name"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(path, f"needs JSON with 'query' and 'task_name': {exc}", i) from exc
    return tasks


def _split(
    folder: Path, split: str, prices: dict[str, Any], opts: LoadOptions
) -> list[dict[str, Any]]:
    path = folder / f"scores_{split}.json"
    records = _read_json(path)
    tasks = _read_tasks(folder / f"queries_{split}.jsonl")
    counter = TokenCounter()
    rows: list[dict[str, Any]] = []
    texts = [r.get("question", "") if isinstance(r, dict) else "" for r in records]
    tokens = counter.count(texts)
    for i, (record, text, n_tokens) in enumerate(zip(records, texts, tokens, strict=True), 1):
        if not text or not isinstance(record.get("scores"), dict):
            raise DataError(path, "each entry needs 'question' and a 'scores' object", i)
        for model, score in record["scores"].items():
            price = prices.get(model)
            if price is None:
                raise DataError(
                    path, f"model {model!r} has no price in llm_candidates.json: add it", i
                )
            inp, out = float(price["input_price"]), float(price["output_price"])
            rows.append(
                {
                    "query_id": query_id("llmrouter", text),
                    "prompt": text,
                    "task": tasks.get(text),
                    "model": model,
                    "score": score,
                    "cost_usd": (n_tokens * inp + opts.output_tokens * out) / 1e6,
                    "cost_estimated": True,
                    "input_price": inp,
                    "output_price": out,
                    "descriptor": str(price.get("feature") or ""),
                }
            )
    return rows


def load_llmrouter(sources: Sequence[Path], opts: LoadOptions) -> dict[str, Any]:
    """`{"train": frame, "test": frame}` from one LLMRouter folder."""
    import pandas as pd

    if len(sources) != 1 or not Path(sources[0]).is_dir():
        raise DataError(
            ", ".join(map(str, sources)), "--format llmrouter takes one folder (llmrouter/)"
        )
    folder = Path(sources[0])
    prices = _read_json(folder / "llm_candidates.json")
    train = pd.DataFrame(_split(folder, "train", prices, opts))
    out = {"train": validate(train, folder / "scores_train.json")}
    if (folder / "scores_test.json").is_file():
        test = pd.DataFrame(_split(folder, "test", prices, opts))
        test = test[~test["prompt"].isin(set(train["prompt"]))]
        out["test"] = validate(test, folder / "scores_test.json")
    return out
