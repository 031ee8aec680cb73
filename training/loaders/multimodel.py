"""What the multi-model loaders (`mmlu-pro`, `zeroeval`) share: one file per model, prices.

A multi-model source is a folder holding one `<model>.json.xz` file per model, each
a JSON list of records about the same questions. The model's name is the file name without
`.json.xz`. Models answered slightly different question sets (an API call failed, a file was cut
short): only the questions every model answered are kept, and the summary says how many went.

No token counts are recorded, so a cost is estimated as
`(prompt_tokens · input_price + reply_tokens · output_price) / 1e6`, with both counts from one
tokenizer (`training.tokens.TokenCounter`) and prices from a `prices.json`; every row is flagged
`cost_estimated`.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import DataError
from training.loaders.common import LoadOptions
from training.tokens import TokenCounter

__all__ = [
    "ModelFile",
    "Question",
    "build_rows",
    "common_questions",
    "estimated_cost",
    "model_files",
    "read_prices",
    "read_records",
]

_SUFFIX = ".json.xz"


@dataclass(frozen=True)
class ModelFile:
    """One model's file: its name (the file name less `.json.xz`) and its path."""

    model: str
    path: Path


@dataclass(frozen=True)
class Question:
    """One question as every model saw it: `prompt` for the router, `sent` for the prompt-token
    count (the text the benchmark actually sent), `gold` to grade against."""

    key: str
    prompt: str
    sent: str
    task: str
    gold: str
    letters: str = ""


def model_files(folder: Path, fmt: str) -> list[ModelFile]:
    """The model files in `folder`, sorted by model name."""
    if not folder.is_dir():
        raise DataError(folder, f"--format {fmt} takes a folder of <model>.json.xz files")
    files = [
        ModelFile(path.name.removesuffix(_SUFFIX), path)
        for path in sorted(folder.iterdir())
        if path.name.endswith(_SUFFIX) and path.is_file()
    ]
    if not files:
        raise DataError(folder, f"no <model>.json.xz files: is this a {fmt} folder?")
    return files


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON list of records in a `.json.xz` file."""
    try:
        with lzma.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, lzma.LZMAError, EOFError) as exc:
        raise DataError(path, f"cannot be read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(path, "expected a JSON list of records (objects)")
    return data


def _find_prices(source: Path, given: Path | None) -> Path:
    if given is not None:
        if not given.is_file():
            raise DataError(given, "no such prices file")
        return given
    for folder in (source, *source.parents[:2]):
        if (folder / "prices.json").is_file():
            return folder / "prices.json"
    raise DataError(source, "no prices.json beside or above it: pass --prices PATH")


def read_prices(
    source: Path, section: str, models: Sequence[str], opts: LoadOptions
) -> dict[str, tuple[float, float]]:
    """`model → (input, output)` USD per 1M tokens from `prices.json`.

    The file maps model names to `[input, output]`, either at its top level or under a section
    named for the source (`"mmlu_pro"`, `"zeroeval"`); keys starting with `_` are notes.
    """
    path = _find_prices(source, opts.prices)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot be read as JSON: {exc}") from exc
    table = data.get(section, data) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise DataError(path, 'expected {"model": [input, output], ...} (USD per 1M tokens)')
    prices: dict[str, tuple[float, float]] = {}
    for model in models:
        value = table.get(model)
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise DataError(
                path, f"model {model!r} has no [input, output] price under {section!r}: add it"
            )
        prices[model] = (float(value[0]), float(value[1]))
    return prices


def common_questions(
    files: Sequence[ModelFile],
    parse: Callable[[dict[str, Any], Path, int], Question],
    key: str,
    notes: list[str],
) -> tuple[list[Question], dict[str, dict[str, dict[str, Any]]]]:
    """Read every model's file; keep the questions all of them answered, in the first file's
    order, less those whose gold answer or text differs between files (files recorded on
    different versions of a benchmark).

    `parse(record, path, row)` reads the question from a record (raising `DataError` on a
    malformed one); `key` names the record's id field. Returns the questions and
    `model → question key → record`. Notes how many questions were dropped and for whom.
    """
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    questions: dict[str, Question] = {}
    conflicts: set[str] = set()
    for file in files:
        records: dict[str, dict[str, Any]] = {}
        for row, record in enumerate(read_records(file.path), start=1):
            if key not in record:
                raise DataError(file.path, f"record has no {key!r}", row)
            ident = str(record[key])
            if ident in records:
                raise DataError(file.path, f"{key} {ident!r} occurs twice", row)
            records[ident] = record
            question = parse(record, file.path, row)
            first = questions.setdefault(ident, question)
            if (first.gold, first.prompt) != (question.gold, question.prompt):
                conflicts.add(ident)
        by_model[file.model] = records
    common = [q for ident, q in questions.items() if all(ident in r for r in by_model.values())]
    keep = [q for q in common if q.key not in conflicts]
    short = {m: len(questions) - len(r) for m, r in by_model.items() if len(r) < len(questions)}
    detail = ", ".join(f"{m} lacks {n}" for m, n in short.items())
    notes.append(
        f"{len(common)} of {len(questions)} questions answered by all {len(files)} models, "
        f"{len(questions) - len(common)} dropped" + (f" ({detail})" if detail else "")
    )
    if len(common) != len(keep):
        notes.append(
            f"{len(common) - len(keep)} more dropped: their gold answer or text differs between "
            f"model files (benchmark versions); {len(keep)} questions kept"
        )
    return keep, by_model


def estimated_cost(prompt_tokens: int, reply_tokens: int, price: tuple[float, float]) -> float:
    """USD for one call at `price` (input, output per 1M tokens)."""
    return (prompt_tokens * price[0] + reply_tokens * price[1]) / 1e6


#: grader(reply, question) → (score, extracted answer)
Grader = Callable[[str, Question], tuple[float, str | None]]


def build_rows(
    questions: Sequence[Question],
    by_model: dict[str, dict[str, dict[str, Any]]],
    prices: dict[str, tuple[float, float]],
    reply_of: Callable[[dict[str, Any]], str],
    grade: Grader,
    prefix: str,
    notes: list[str],
) -> list[dict[str, Any]]:
    """Canonical rows, one per (question, model): the reply kept as `response`, its extracted
    final answer as `answer`, the benchmark's answer as `gold` (what `coe profile
    --from-training` grades a new expert against), the grade as `score`, and the estimated
    cost."""
    counter = TokenCounter()
    notes.append(
        f"costs estimated (cost_estimated=True): prompt and reply tokens counted with "
        f"{counter.name} × prices per 1M tokens"
    )
    prompt_tokens = counter.count([q.sent for q in questions])
    rows: list[dict[str, Any]] = []
    for model, records in by_model.items():
        replies = [reply_of(records[q.key]) for q in questions]
        reply_tokens = counter.count(replies)
        price = prices[model]
        for question, reply, n_in, n_out in zip(
            questions, replies, prompt_tokens, reply_tokens, strict=True
        ):
            score, answer = grade(reply, question)
            rows.append(
                {
                    "query_id": f"{prefix}-{question.key}",
                    "prompt": question.prompt,
                    "task": question.task,
                    "model": model,
                    "score": score,
                    "cost_usd": estimated_cost(n_in, n_out if reply else 0, price),
                    "cost_estimated": True,
                    "response": reply,
                    "answer": answer,
                    "gold": question.gold,
                    "input_price": price[0],
                    "output_price": price[1],
                }
            )
    return rows
