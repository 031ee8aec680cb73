"""Questions with gold answers, read from the benchmark files `coe profile` runs a pool on.

=========  ==========================================  ==================================
bench      file under the data folder                  graded by
=========  ==========================================  ==================================
gsm8k      gsm8k_test.jsonl (answer after ``####``)     the final number
aime24     symbolic_moe/AIME24_test.json                the final number
mmlu_pro   symbolic_moe/MMLU_Pro_test.json              the option letter (A-J)
medmcqa    symbolic_moe/MedMCQA_test.json               the option letter (A-D)
gpqa       symbolic_moe/GPQA_test.json                  the option letter (A-D)
humaneval  HumanEval.jsonl.gz                           its unit tests, in a subprocess
=========  ==========================================  ==================================

Each question carries the prompt sent to the experts: the question plus a short instruction on
how to state the answer, so that small models' answers can be graded at all.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from router.answers import option_letters
from training.errors import DataError

__all__ = ["BENCHES", "Question", "load_questions"]

Kind = Literal["number", "choice", "code"]

NUMBER_INSTRUCTION = (
    "\n\nSolve it step by step, then give the final answer on the last line as 'The answer is N'."
)
CHOICE_INSTRUCTION = (
    "\n\nThink briefly, then give the letter of the correct option on the last line as "
    "'The answer is (X)'."
)
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in one ```python "
    "code block.\n\n"
)

#: bench name → (file relative to the data folder, how it is graded)
BENCHES: dict[str, tuple[str, Kind]] = {
    "gsm8k": ("gsm8k_test.jsonl", "number"),
    "aime24": ("symbolic_moe/AIME24_test.json", "number"),
    "mmlu_pro": ("symbolic_moe/MMLU_Pro_test.json", "choice"),
    "medmcqa": ("symbolic_moe/MedMCQA_test.json", "choice"),
    "gpqa": ("symbolic_moe/GPQA_test.json", "choice"),
    "humaneval": ("HumanEval.jsonl.gz", "code"),
}


@dataclass(frozen=True)
class Question:
    """One gradable question: `prompt` goes to the experts, `gold` is the right answer."""

    query_id: str
    bench: str
    kind: Kind
    question: str
    prompt: str
    gold: str
    extra: dict[str, Any] = field(default_factory=dict)  # HumanEval: test, entry_point


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(path, "no such file; pass --data-dir pointing at the benchsets folder")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot be read: {exc}") from exc
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON list of questions")
    return data


def _question(bench: str, kind: Kind, index: int, row: dict[str, Any]) -> Question:
    qid = f"{bench}/{row.get('task_id', index)}"
    if kind == "code":
        prompt = str(row["prompt"])
        extra = {"test": row["test"], "entry_point": row["entry_point"]}
        return Question(qid, bench, kind, prompt, CODE_INSTRUCTION + prompt, "", extra)
    if bench == "gsm8k":
        text, gold = str(row["question"]), str(row["answer"]).split("####")[-1].strip()
    else:
        text, gold = str(row["question"]), str(row["gold_answer"]).strip()
    instruction = NUMBER_INSTRUCTION if kind == "number" else CHOICE_INSTRUCTION
    extra = {"letters": option_letters(text) or "ABCD"} if kind == "choice" else {}
    return Question(qid, bench, kind, text, text + instruction, gold.replace(",", ""), extra)


def load_questions(benches: list[str], data_dir: Path, n: int, seed: int = 0) -> list[Question]:
    """`n` questions from each bench, a seeded sample so every run takes the same ones."""
    unknown = [b for b in benches if b not in BENCHES]
    if unknown:
        raise DataError(data_dir, f"unknown bench(es) {unknown}; known: {sorted(BENCHES)}")
    questions: list[Question] = []
    for bench in benches:
        relative, kind = BENCHES[bench]
        rows = _read(Path(data_dir) / relative)
        picked = sorted(
            random.Random(f"{seed}/{bench}").sample(range(len(rows)), min(n, len(rows)))
        )
        questions.extend(_question(bench, kind, i, rows[i]) for i in picked)
    return questions
