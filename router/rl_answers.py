"""What the RL router observes about an answer: its length, its format, agreement with others.

A cascade pays only if, after calling a cheap expert, the router can tell a likely-wrong answer
from a likely-right one. These features are that evidence, computed from the answer text alone,
by one function used both on recorded responses (training, `coe eval`) and on live answers (the
gateway's cascade), so the served policy sees exactly what it was trained on:

- `length`: `log1p(characters) / 8` (about 1 for a 3,000-character answer);
- `format`: 1 when the answer concludes in the task's expected format: the option letter of a
  multiple-choice prompt (`(A) ... (B) ...`), else a number after an explicit final-answer
  marker (`#### 18`, `\\boxed{18}`, "the answer is 18"; `router.answers`);
- `agreement`: the share of the answers already seen in the episode whose conclusion (option,
  else final number, else words: `normalise`) equals this one's; 0 for the first answer.

`key="conclusion"` (what `RLRouter` trains with since the multi-model sets) reads the answer
as the graders do instead (`router.answers.conclusion`: the option letter, the final number of
ZeroEval's JSON `answer` field, or the MATH answer with `math`): `format` is whether it states
one, and agreement compares them, so `\\frac{1}{2}` agrees with `0.5` and a JSON reply's
answer is not confused with the last number of its reasoning. `"normalise"`, the default,
keeps the features routers trained before it were trained on.

Example::

    answer_features("3 * 6 = 18\\n#### 18", "How many ...?", earlier=["#### 18"])
    # array([0.368, 1.0, 1.0]): 17 characters, concludes with "#### 18", agrees
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.answers import (
    conclusion,
    extract_marked_number,
    extract_option,
    normalise,
    option_letters,
)

__all__ = [
    "ANSWER_FEATURES",
    "KEYS",
    "RecordedAnswers",
    "answer_features",
    "recorded_answers",
    "with_agreement",
]

#: The feature names, in the order of the feature vector.
ANSWER_FEATURES = ("length", "format", "agreement")
#: How an answer's conclusion is read (see the module).
KEYS = ("normalise", "conclusion")


def _static(text: str, letters: str | None) -> tuple[float, float]:
    length = math.log1p(len(text)) / 8.0
    if letters:
        parses = extract_option(text, letters) is not None
    else:
        parses = extract_marked_number(text) is not None
    return length, 1.0 if parses else 0.0


def _key(text: str, letters: str | None) -> str | None:
    key = normalise(text, letters)
    return key or None


def _read(
    text: str, prompt: str, letters: str | None, key: str, math_task: bool
) -> tuple[float, float, str | None]:
    """(length, format, conclusion key) of one answer."""
    if key == "normalise":
        return (*_static(text, letters), _key(text, letters))
    if key != "conclusion":
        raise ValueError(f"answer key must be one of {KEYS}, not {key!r}")
    found = conclusion(text, prompt, math_task)
    return math.log1p(len(text)) / 8.0, 0.0 if found is None else 1.0, found


def answer_features(
    text: str,
    prompt: str,
    earlier: Sequence[str] = (),
    key: str = "normalise",
    math_task: bool = False,
) -> np.ndarray:
    """`(3,)`: the features of answer `text` to `prompt`, given the answers seen before it."""
    letters = option_letters(prompt)
    length, parses, found = _read(text, prompt, letters, key, math_task)
    agree = 0.0
    if earlier and found is not None:
        agree = sum(_read(e, prompt, letters, key, math_task)[2] == found for e in earlier) / len(
            earlier
        )
    return np.array([length, parses, agree])


@dataclass(frozen=True)
class RecordedAnswers:
    """Recorded responses as the simulator needs them.

    `static[i, j]` is `(length, format)` of model j's response to query i; `keys[i, j]` an
    integer code of its conclusion (equal codes: equal conclusions; -1: none, or no response).
    """

    static: np.ndarray  # (n, m, 2)
    keys: np.ndarray  # (n, m) int


def recorded_answers(
    responses: np.ndarray,
    prompts: Sequence[str],
    key: str = "normalise",
    math_task: bool = False,
) -> RecordedAnswers:
    """Features of an `(n, m)` array of responses (None or NaN where a pair has none: zeros)."""
    n, m = responses.shape
    static = np.zeros((n, m, 2))
    keys = np.full((n, m), -1, dtype=np.int64)
    codes: dict[str, int] = {}
    for i in range(n):
        letters = option_letters(prompts[i])
        for j in range(m):
            text = responses[i, j]
            if not isinstance(text, str):
                continue
            length, parses, found = _read(text, prompts[i], letters, key, math_task)
            static[i, j] = (length, parses)
            if found is not None:
                keys[i, j] = codes.setdefault(found, len(codes))
    return RecordedAnswers(static, keys)


def with_agreement(
    answers: RecordedAnswers, rows: np.ndarray, picks: np.ndarray, called: np.ndarray
) -> np.ndarray:
    """`(b, 3)`: features of expert `picks[e]`'s answer on query `rows[e]`, agreement taken
    over the experts `called[e]` (a `(b, m)` mask) had answered before it."""
    key = answers.keys[rows, picks]
    same = (answers.keys[rows] == key[:, None]) & (key[:, None] >= 0) & called
    seen = called.sum(axis=1)
    agree = np.where(seen > 0, same.sum(axis=1) / np.maximum(seen, 1), 0.0)
    return np.concatenate([answers.static[rows, picks], agree[:, None]], axis=1)
