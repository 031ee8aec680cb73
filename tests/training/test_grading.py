"""The graders on known right and wrong answers, HumanEval's unit tests included."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from router.answers import extract_number, extract_option, normalise, option_letters
from training.benchsets import load_questions
from training.grading import extract_code, grade_choice, grade_code, grade_number

BENCHSETS = Path(__file__).resolve().parents[2] / "../shared/data/benchsets"

PROMPT = '''from typing import List


def add_all(numbers: List[int]) -> int:
    """Sum of the numbers.
    >>> add_all([1, 2])
    3
    """
'''
TEST = """

def check(candidate):
    assert candidate([1, 2, 3]) == 6
    assert candidate([]) == 0
"""


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("Janet sells 9 eggs.\n9 * $2 = $18\n#### 18", "18", 1.0),
        ("So she makes $1,250.00 a week. The answer is 1250", "1,250", 1.0),
        ("The answer is 17, not 18 as one might think", "18", 0.0),
        ("First 3 + 4 = 7, so the total is 7.5", "7.5", 1.0),
        ("I cannot tell.", "3", 0.0),
        ("The answer is -4.", "-4", 1.0),
    ],
)
def test_number_grading(response: str, gold: str, score: float) -> None:
    assert grade_number(response, gold) == score


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("The answer is (C)", "C", 1.0),
        ("Option (A) is tempting, but the answer is (D).", "D", 1.0),
        ("Answer: B", "B", 1.0),
        ("B) because myelin speeds conduction", "B", 1.0),
        ("The answer is (A)", "B", 0.0),
        ("I would pick the second one", "B", 0.0),
        ("The answer is (K)", "K", 0.0),  # not an option of an A-J question
    ],
)
def test_choice_grading(response: str, gold: str, score: float) -> None:
    assert grade_choice(response, gold) == score


def test_normalised_answers_agree_on_meaning_not_wording() -> None:
    assert normalise("The total is $1,000.") == normalise("#### 1000") == "1000"
    assert normalise("I'd say (B).", "ABCD") == normalise("Answer: B", "ABCD") == "B"
    assert normalise("Paris!") == normalise("paris") == "paris"
    assert option_letters("Pick: (A) x (B) y (C) z") == "ABC"
    assert option_letters("no options (B) here") is None
    assert extract_number("no numbers") is None
    assert extract_option("nothing chosen", "ABCD") is None


def test_code_extraction_takes_the_fenced_block() -> None:
    response = "Here:\n```python\ndef f():\n    return 1\n```\nDone."
    assert extract_code(response) == "def f():\n    return 1\n"
    assert extract_code("    return 1\n") == "    return 1\n"


def test_humaneval_correct_solution_passes() -> None:
    whole = "```python\ndef add_all(numbers):\n    return sum(numbers)\n```"
    assert grade_code(whole, PROMPT, TEST, "add_all") == 1.0
    body_only = "    return sum(numbers)\n"
    assert grade_code(body_only, PROMPT, TEST, "add_all") == 1.0


def test_humaneval_broken_solution_fails() -> None:
    wrong = "```python\ndef add_all(numbers):\n    return len(numbers)\n```"
    assert grade_code(wrong, PROMPT, TEST, "add_all") == 0.0
    assert grade_code("this is not python", PROMPT, TEST, "add_all") == 0.0


def test_humaneval_runaway_and_network_are_stopped() -> None:
    loop = "```python\ndef add_all(numbers):\n    while True:\n        pass\n```"
    assert grade_code(loop, PROMPT, TEST, "add_all", timeout_s=1) == 0.0
    network = (
        "```python\nimport socket\n"
        "def add_all(numbers):\n"
        "    socket.socket().close()  # harmless anywhere else: here, no sockets at all\n"
        "    return sum(numbers)\n```"
    )
    assert grade_code(network, PROMPT, TEST, "add_all") == 0.0


@pytest.mark.skipif(not BENCHSETS.is_dir(), reason="../shared/data/benchsets is not here")
def test_real_humaneval_canonical_solution_passes_and_questions_load() -> None:
    with gzip.open(BENCHSETS / "HumanEval.jsonl.gz", "rt") as handle:
        problem = json.loads(handle.readline())
    solution = problem["canonical_solution"]
    args = (problem["prompt"], problem["test"], problem["entry_point"])
    assert grade_code(solution, *args) == 1.0
    assert grade_code("    return None\n", *args) == 0.0
    questions = load_questions(["gsm8k", "mmlu_pro", "humaneval"], BENCHSETS, n=3)
    assert [q.bench for q in questions] == ["gsm8k"] * 3 + ["mmlu_pro"] * 3 + ["humaneval"] * 3
    gsm = questions[0]
    assert gsm.gold.lstrip("-").isdigit() and gsm.prompt.startswith(gsm.question)
    assert questions[3].extra["letters"].startswith("ABCD")
    assert questions == load_questions(["gsm8k", "mmlu_pro", "humaneval"], BENCHSETS, n=3)
