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

`training_questions` draws the questions from a router's own training file instead (`coe profile
--from-training`), so that a new expert is profiled on queries the router remembers and
`cf` onboarding applies (`router.cluster`). The gold answer is the file's `gold` column (which
`coe data import --format mmlu-pro|zeroeval` writes), else the extracted `answer` of a row that
scored 1; a query with neither (no recorded model got it right) cannot be graded and is not
drawn. How it is graded follows the gold: an option letter of a question with `(A) …` options,
a plain number, else a MATH answer (LaTeX normalised, `\\boxed{}` asked for).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from router.answers import option_letters
from training.errors import DataError

__all__ = ["BENCHES", "Question", "TrainingQuestions", "load_questions", "training_questions"]

Kind = Literal["number", "choice", "code", "math"]

NUMBER_INSTRUCTION = (
    "\n\nSolve it step by step, then give the final answer on the last line as 'The answer is N'."
)
CHOICE_INSTRUCTION = (
    "\n\nThink briefly, then give the letter of the correct option on the last line as "
    "'The answer is (X)'."
)
MATH_INSTRUCTION = (
    "\n\nSolve it step by step, then give the final answer on the last line as \\boxed{ANSWER}."
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
    #: the text a router sees, where it is not `prompt` (a training file's query: its prompt
    #: there, so that the profiled row matches the router's remembered query)
    routed: str | None = None

    @property
    def router_prompt(self) -> str:
        return self.routed if self.routed is not None else self.prompt


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


@dataclass(frozen=True)
class TrainingQuestions:
    """What `training_questions` drew, and what it had to leave out of the draw."""

    questions: list[Question]
    candidates: int  # queries in the file with a gold answer, drawn from
    no_gold: int  # queries without one (no `gold` column, no recorded model right)
    gold_from: str  # "gold column" or "answers of rows that scored 1"


_NUMBER = re.compile(r"-?[\d,]*\.?\d+")
GRADERS = ("auto", "choice", "number", "math")


def _kind_of(prompt: str, gold: str, grader: str) -> tuple[Kind, dict[str, Any]]:
    letters = option_letters(prompt)
    if grader == "choice" or (
        grader == "auto" and letters is not None and len(gold) == 1 and gold.upper() in letters
    ):
        return "choice", {"letters": letters or "ABCDEFGHIJ"}
    if grader == "number" or (grader == "auto" and _NUMBER.fullmatch(gold)):
        return "number", {}
    return "math", {}


#: choose(query_ids, prompts, n, seed) → indices of the `n` queries to profile
Chooser = Callable[[list[str], list[str], int, int], Sequence[int]]


def training_questions(
    path: Path, n: int, seed: int = 0, grader: str = "auto", choose: Chooser | None = None
) -> TrainingQuestions:
    """`n` queries of the canonical routing dataset at `path` (a router's training file), a
    seeded sample of those with a gold answer (or those `choose` picks among them, e.g. the
    router's D-optimal design: `ClusterRouter.select_training_profile`), as questions whose
    rows keep the file's `query_id`, `prompt` (as `routed`) and `task`; `grader` forces how
    they are graded."""
    from training.dataset import read_dataset

    if grader not in GRADERS:
        raise DataError(path, f"unknown grader {grader!r}; choose from {list(GRADERS)}")
    frame = read_dataset(path)
    first = frame.drop_duplicates("query_id").set_index("query_id")
    if "gold" in frame.columns and frame["gold"].notna().any():
        golds = frame[frame["gold"].notna()].drop_duplicates("query_id")
        gold = dict(zip(golds["query_id"], golds["gold"].astype(str), strict=True))
        source = "gold column"
    elif "answer" in frame.columns:
        right = frame[(frame["score"] >= 1.0) & frame["answer"].notna()]
        right = right[right["answer"].astype(str).str.strip() != ""].drop_duplicates("query_id")
        gold = dict(zip(right["query_id"], right["answer"].astype(str), strict=True))
        source = "answers of rows that scored 1"
    else:
        raise DataError(
            path,
            "has neither a 'gold' column nor the models' extracted 'answer' column, so its "
            "queries cannot be graded; import it with `coe data import --format mmlu-pro|"
            "zeroeval` (which writes both)",
        )
    ids = [q for q in first.index if str(gold.get(q, "")).strip()]
    if not ids:
        raise DataError(path, "no query has a gold answer to grade a new expert against")
    if choose is None:
        picked = sorted(random.Random(f"{seed}/training").sample(range(len(ids)), min(n, len(ids))))
    else:
        prompts = [str(first.at[q, "prompt"]) for q in ids]
        picked = sorted(int(i) for i in choose([str(q) for q in ids], prompts, n, seed))
    questions = []
    for i in picked:
        qid = str(ids[i])
        text, answer = str(first.at[qid, "prompt"]), str(gold[qid]).strip()
        kind, extra = _kind_of(text, answer, grader)
        if kind == "number":
            answer = answer.replace(",", "")  # 1,000 (a MATH answer's commas are kept: (1,2))
        instruction = {"choice": CHOICE_INSTRUCTION, "number": NUMBER_INSTRUCTION}.get(
            kind, MATH_INSTRUCTION
        )
        task = first.at[qid, "task"]
        bench = str(task) if isinstance(task, str) and task else "training"
        questions.append(
            Question(qid, bench, kind, text, text + instruction, answer, extra, routed=text)
        )
    return TrainingQuestions(questions, len(ids), len(first) - len(ids), source)
