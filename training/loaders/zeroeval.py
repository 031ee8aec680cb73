"""ZeroEval (WildEval/ZeroEval) recorded answers: GSM8K and MATH level 5, one file per model.

Each file is a list of records `id, question (GSM8K) | problem (MATH), answer (gold), output`
(a one-element list holding the reply; most replies are a JSON object with `reasoning` and
`answer`) and `chat_history` (the prompt sent: the question plus ZeroEval's instruction). The
router's prompt is the question; prompt tokens are counted on what was sent.

Correctness is coe's own: for GSM8K the final number (`training.grading.number_reply_answer`)
against the gold after `#`; for MATH the final answer (`training.grading.grade_math`: the JSON
`answer` field or the last `\\boxed{}`, LaTeX normalised, numbers compared by value). The task
is the folder's name (`gsm`, `math-l5`); several folders import into one frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.answers import extract_number
from router.math_answers import extract_math_answer, math_equal
from training.dataset import validate
from training.errors import DataError
from training.grading import math_reply_answer, number_reply_answer
from training.loaders.common import LoadOptions
from training.loaders.multimodel import (
    Question,
    build_rows,
    common_questions,
    model_files,
    read_prices,
)

__all__ = ["load_zeroeval"]


def _parser(task: str) -> Any:
    def parse(record: dict[str, Any], path: Path, row: int) -> Question:
        text = record.get("question") or record.get("problem")
        gold = record.get("answer")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, "record has no 'question' or 'problem' text", row)
        if not isinstance(gold, str | int | float) or not str(gold).strip():
            raise DataError(path, "record has no gold 'answer'", row)
        history = record.get("chat_history")
        sent = history[0] if isinstance(history, list) and history else text
        return Question(
            key=str(record["id"]),
            prompt=text.strip(),
            sent=str(sent),
            task=task,
            gold=str(gold).strip(),
        )

    return parse


def _reply(record: dict[str, Any]) -> str:
    output = record.get("output")
    if isinstance(output, list):
        output = output[0] if output else ""
    return output if isinstance(output, str) else ""


def _grade_number(reply: str, question: Question) -> tuple[float, str | None]:
    answer = number_reply_answer(reply)
    gold = extract_number(question.gold)
    return float(answer is not None and answer == gold), answer


def _grade_math(reply: str, question: Question) -> tuple[float, str | None]:
    answer = math_reply_answer(reply)
    return float(math_equal(extract_math_answer(reply), question.gold)), answer


def _load_folder(folder: Path, opts: LoadOptions) -> list[dict[str, Any]]:
    files = model_files(folder, "zeroeval")
    task = folder.name
    prices = read_prices(folder, "zeroeval", [f.model for f in files], opts)
    notes: list[str] = []
    questions, by_model = common_questions(files, _parser(task), "id", notes)
    grade = _grade_number if task.startswith("gsm") else _grade_math
    rows = build_rows(questions, by_model, prices, _reply, grade, f"zeroeval-{task}", notes)
    opts.notes.extend(f"{task}: {line}" for line in notes)
    return rows


def load_zeroeval(sources: Sequence[Path], opts: LoadOptions) -> dict[str, Any]:
    """`{"all": frame}` from one or more ZeroEval task folders (`gsm`, `math-l5`).

    A folder whose name starts with `gsm` is graded by its final number, any other as MATH.
    """
    import pandas as pd

    if not sources:
        raise DataError("<none>", "give a ZeroEval task folder, e.g. zeroeval/gsm")
    rows: list[dict[str, Any]] = []
    models: set[str] | None = None
    for source in sources:
        folder_rows = _load_folder(Path(source), opts)
        these = {r["model"] for r in folder_rows}
        if models is not None and these != models:
            raise DataError(
                source, f"models differ from the first folder's: {sorted(these ^ models)}"
            )
        models = these
        rows.extend(folder_rows)
    return {"all": validate(pd.DataFrame(rows), ", ".join(map(str, sources)))}
