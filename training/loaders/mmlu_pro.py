"""MMLU-Pro (TIGER-AI-Lab/MMLU-Pro) recorded answers: one `<model>.json.xz` per model.

Each file is a list of records `question_id, question, options, answer (gold letter), category,
pred` with the reply under `generated_text` or `model_outputs`. The router's prompt is the
question and its options as `(A) …` lines (the benchmark's 5-shot examples are not part of it:
a deployment would not send them). The task is the category.

Correctness is coe's own: the option letter re-extracted from the reply
(`training.grading.option_reply_answer`, the same extraction `vote` uses), not the benchmark's
`pred`; a reply with no letter scores 0 (the benchmark guesses at random there). The summary
says how often the two agree. Costs are estimated (see `training.loaders.multimodel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.dataset import validate
from training.errors import DataError
from training.grading import option_reply_answer
from training.loaders.common import LoadOptions
from training.loaders.multimodel import (
    Question,
    build_rows,
    common_questions,
    model_files,
    read_prices,
)

__all__ = ["load_mmlu_pro", "mmlu_pro_prompt"]

LETTERS = "ABCDEFGHIJ"


def mmlu_pro_prompt(question: str, options: Sequence[str]) -> str:
    """The question followed by one `(A) option` line per option."""
    lines = [f"({letter}) {option}" for letter, option in zip(LETTERS, options, strict=False)]
    return question.strip() + "\n\n" + "\n".join(lines)


def _parse(record: dict[str, Any], path: Path, row: int) -> Question:
    question, options, gold = record.get("question"), record.get("options"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise DataError(path, "record has no 'question' text", row)
    # A few MMLU-Pro questions really have one option only: kept, they are graded like any.
    if not isinstance(options, list) or not 1 <= len(options) <= len(LETTERS):
        raise DataError(path, "'options' must be a list of 1 to 10 strings", row)
    letters = LETTERS[: len(options)]
    if not isinstance(gold, str) or gold.strip() not in letters:
        raise DataError(path, f"gold 'answer' must be one of {letters}, got {gold!r}", row)
    prompt = mmlu_pro_prompt(question, [str(o) for o in options])
    category = record.get("category")
    return Question(
        key=str(record["question_id"]),
        prompt=prompt,
        sent=prompt,
        task=str(category) if category else "mmlu_pro",
        gold=gold.strip(),
        letters=letters,
    )


def _reply(record: dict[str, Any]) -> str:
    for key in ("model_outputs", "generated_text"):
        value = record.get(key)
        if isinstance(value, str):
            return value
    return ""


def _grade(reply: str, question: Question) -> tuple[float, str | None]:
    letter = option_reply_answer(reply, question.letters)
    return float(letter == question.gold), letter


def _agreement(
    by_model: dict[str, dict[str, dict[str, Any]]], rows: list[dict[str, Any]]
) -> list[str]:
    """Lines saying how often the re-extracted letter equals the benchmark's `pred`."""
    per_model: dict[str, list[int]] = {}
    for row in rows:
        key = str(row["query_id"]).removeprefix("mmlu_pro-")
        pred = by_model[row["model"]][key].get("pred")
        pred = None if pred in (None, "None", "") else pred
        counts = per_model.setdefault(row["model"], [0, 0, 0, 0])
        counts[0] += row["answer"] == pred
        counts[1] += 1
        if pred is not None:
            counts[2] += row["answer"] == pred
            counts[3] += 1
    agree = sum(c[0] for c in per_model.values()) / max(1, sum(c[1] for c in per_model.values()))
    agree_set = sum(c[2] for c in per_model.values()) / max(
        1, sum(c[3] for c in per_model.values())
    )
    lines = [
        f"grader agreement with the benchmark's pred: {agree:.4f} of all replies, "
        f"{agree_set:.4f} where pred is set (some files fill pred with a random letter where "
        "the benchmark's parser found none; coe scores a reply without a letter 0)"
    ]
    lines += [
        f"  {model}: agreement {c[0] / c[1]:.4f} ({c[1] - c[3]} replies without pred)"
        for model, c in per_model.items()
    ]
    return lines


def load_mmlu_pro(sources: Sequence[Path], opts: LoadOptions) -> dict[str, Any]:
    """`{"all": frame}` from one MMLU-Pro folder (no published split: use --test-fraction)."""
    import pandas as pd

    if len(sources) != 1:
        raise DataError(", ".join(map(str, sources)), "--format mmlu-pro takes one folder")
    folder = Path(sources[0])
    files = model_files(folder, "mmlu-pro")
    prices = read_prices(folder, "mmlu_pro", [f.model for f in files], opts)
    questions, by_model = common_questions(files, _parse, "question_id", opts.notes)
    rows = build_rows(questions, by_model, prices, _reply, _grade, "mmlu_pro", opts.notes)
    opts.notes.extend(_agreement(by_model, rows))
    return {"all": validate(pd.DataFrame(rows), folder)}
