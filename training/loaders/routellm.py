"""RouteLLM (lm-sys/RouteLLM) benchmark results: GPT-4 vs Mixtral correctness per question.

Sources: the `routellm/` folder, or its `mmlu/` or `gsm8k/` folders, or single CSV files
(`mmlu_<subject>.csv`: `prompt, <model>, <model>` as True/False; `gsm8k_responses.csv` adds
`<model>_response` columns). The task is the MMLU subject or `gsm8k`. Prompts listed in the
folder's `contaminated_prompts.jsonl` (field `eval_prompt`) are dropped unless
`include_contaminated` is set.

Costs come from list prices (USD per 1M tokens, `PRICES`): prompt tokens are counted; output
tokens are counted from the response where the file has one, otherwise assumed
(`LoadOptions.output_tokens`). Every cost is flagged `cost_estimated`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from training.dataset import validate
from training.errors import DataError
from training.loaders.common import LoadOptions, query_id
from training.tokens import TokenCounter

__all__ = ["PRICES", "load_routellm"]

#: (input, output) USD per 1M tokens: OpenAI's list price for gpt-4-1106-preview and Together
#: AI's for Mixtral-8x7B-Instruct-v0.1.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-1106-preview": (10.0, 30.0),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.6, 0.6),
}


def _csv_files(source: Path) -> Iterator[Path]:
    if source.is_file():
        yield source
        return
    if not source.is_dir():
        raise DataError(source, "no such file or folder")
    for sub in ("mmlu", "gsm8k"):
        if (source / sub).is_dir():
            yield from _csv_files(source / sub)
    yield from sorted(source.glob("*.csv"))


def _contaminated(folder: Path) -> set[str]:
    path = folder / "contaminated_prompts.jsonl"
    if not path.is_file():
        return set()
    out = set()
    for i, line in enumerate(path.read_text().split("\n"), start=1):
        if line.strip():
            try:
                out.add(json.loads(line)["eval_prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(path, f"needs JSON lines with 'eval_prompt': {exc}", i) from exc
    return out


def _task(path: Path) -> str:
    stem = path.stem
    if stem.startswith("mmlu_"):
        return stem.removeprefix("mmlu_")
    return stem.removesuffix("_responses")


def _rows(path: Path, opts: LoadOptions, counter: TokenCounter) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise DataError(path, f"cannot be read as CSV: {exc}") from exc
    models = [c for c in frame.columns if c in PRICES]
    if "prompt" not in frame.columns or not models:
        raise DataError(
            path, f"needs a 'prompt' column and correctness columns for {sorted(PRICES)}"
        )
    if not opts.include_contaminated:
        frame = frame[~frame["prompt"].isin(_contaminated(path.parent))]
    prompt_tokens = counter.count(frame["prompt"].tolist())
    task = _task(path)
    rows: list[dict[str, Any]] = []
    for model in models:
        inp, out = PRICES[model]
        response_col = f"{model}_response"
        responses = frame[response_col].tolist() if response_col in frame.columns else None
        out_tokens = counter.count(responses) if responses else [opts.output_tokens] * len(frame)
        for pos, (row_no, prompt, value, n_in, n_out) in enumerate(
            zip(frame.index, frame["prompt"], frame[model], prompt_tokens, out_tokens, strict=True)
        ):
            if value not in ("True", "False"):
                raise DataError(path, f"{model}: expected True/False, got {value!r}", row_no + 1)
            rows.append(
                {
                    "query_id": query_id(f"routellm-{task}", prompt),
                    "prompt": prompt,
                    "task": task,
                    "model": model,
                    "score": 1.0 if value == "True" else 0.0,
                    "cost_usd": (n_in * inp + n_out * out) / 1e6,
                    "cost_estimated": True,
                    "response": responses[pos] if responses else None,
                    "input_price": inp,
                    "output_price": out,
                }
            )
    return rows


def load_routellm(sources: Sequence[Path], opts: LoadOptions) -> dict[str, Any]:
    """`{"all": frame}` from RouteLLM CSV files or folders (no published split)."""
    import pandas as pd

    counter = TokenCounter()
    rows: list[dict[str, Any]] = []
    for source in sources:
        for path in _csv_files(Path(source)):
            rows.extend(_rows(path, opts, counter))
    if not rows:
        raise DataError(", ".join(map(str, sources)), "no RouteLLM CSV files found")
    frame = pd.DataFrame(rows)
    # The same MMLU question text occurs under two subjects a few times: keep the first.
    frame = frame.drop_duplicates(["query_id", "model"], keep="first")
    return {"all": validate(frame, ", ".join(map(str, sources)))}
