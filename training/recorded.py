"""Recorded replies, seen only by calling: the ledger every offline strategy runs through.

Offline, a strategy (vote, cascade) decides from recorded replies what it would decide when
serving. To be honest it must see a reply only after it has "called" that expert and paid for it,
and never the gold answer. `Ledger` enforces this: it holds one episode per query, charges the
recorded (realised) cost of every call, and hands out what the strategy may read about a reply —
its conclusion's key, whether it concludes in the expected format, its length — only for experts
already called (`HIDDEN` elsewhere). The score of the answer a strategy returns is read once, at
the end (`settle`), and only for an expert that was called.

What is read about a reply is what the gateway could compute from the live text:
`router.rl_answers.recorded_answers` (the RL router's answer features), or any `AnswerKey`
(e.g. a MATH normaliser) for the conclusion.

Example::

    table = reply_table(test.responses, test.prompts)
    ledger = Ledger(test, table, rows=np.arange(len(test)))
    ledger.call(np.zeros(len(test), dtype=int))      # everyone calls expert 0
    seen = ledger.seen()                              # keys of expert 0's replies, HIDDEN elsewhere
    scores = ledger.settle(np.zeros(len(test), dtype=int))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from router.data import RoutingData
from router.math_answers import extract_json_answer, last_boxed
from router.rl_answers import recorded_answers

__all__ = ["HIDDEN", "NO_ANSWER", "AnswerKey", "Ledger", "ReplyTable", "Seen", "reply_table"]

#: The key of a reply that has no conclusion (or no reply recorded).
NO_ANSWER = -1
#: What `Ledger.seen` shows for an expert not (yet) called.
HIDDEN = -2

#: `key(reply, prompt, task)` → a comparable conclusion (equal strings: the same answer), or
#: None when the reply states none.
AnswerKey = Callable[[str, str, str | None], str | None]


@dataclass(frozen=True)
class ReplyTable:
    """What can be read off each recorded reply: `keys[i, j]` an integer code of its conclusion
    (equal codes: equal conclusions; `NO_ANSWER` where none), `marked[i, j]` whether it
    concludes in the task's expected format, `length[i, j]` `log1p(characters) / 8`."""

    keys: np.ndarray  # (n, m) int
    marked: np.ndarray  # (n, m) bool
    length: np.ndarray  # (n, m) float

    def take(self, rows: np.ndarray) -> ReplyTable:
        """The table of queries `rows`, in that order."""
        return ReplyTable(self.keys[rows], self.marked[rows], self.length[rows])


def reply_table(
    responses: np.ndarray,
    prompts: Sequence[str],
    key: AnswerKey | None = None,
    tasks: Sequence[str | None] = (),
) -> ReplyTable:
    """The table of an `(n, m)` array of reply texts (None where a pair has none).

    Format and length are the RL router's answer features (`router.rl_answers`); the conclusion
    is `key`'s when given (the graders' own reading of a reply, per task: `tasks[i]`), else the
    same module's. A reply also counts as concluding in the expected format when it ends with
    a JSON `answer` field or a `\\boxed{}` answer (ZeroEval's and MATH's formats).
    """
    answers = recorded_answers(responses, prompts)
    keys = answers.keys
    marked = answers.static[..., 1] > 0.5
    if key is not None:
        keys = np.full(responses.shape, NO_ANSWER, dtype=np.int64)
        codes: dict[str, int] = {}
        for (i, j), text in np.ndenumerate(responses):
            task = tasks[i] if len(tasks) else None
            found = key(text, prompts[i], task) if isinstance(text, str) else None
            if found is not None:
                keys[i, j] = codes.setdefault(found, len(codes))
    explicit = np.vectorize(_explicit, otypes=[bool])(responses)
    marked = marked | explicit
    return ReplyTable(
        keys=np.asarray(keys, dtype=np.int64),
        marked=marked,
        length=np.asarray(answers.static[..., 0], dtype=np.float64),
    )


def _explicit(text: object) -> bool:
    if not isinstance(text, str):
        return False
    return extract_json_answer(text) is not None or last_boxed(text) is not None


@dataclass(frozen=True)
class Seen:
    """What a strategy knows about the replies of its episodes: `keys` `(b, m)` (`HIDDEN` for
    experts not called), `marked` and `length` (0 where not called), `called` `(b, m)` bool."""

    keys: np.ndarray
    marked: np.ndarray
    length: np.ndarray
    called: np.ndarray


class Ledger:
    """The calls of one episode per query in `rows` of recorded `data`.

    Every call is charged its recorded cost once; `seen()` reveals replies of called experts
    only; `settle(answer)` returns the recorded score of each episode's returned answer.
    """

    def __init__(self, data: RoutingData, table: ReplyTable, rows: np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self._scores = np.asarray(data.scores, dtype=np.float64)[self.rows]
        self._costs = np.asarray(data.costs, dtype=np.float64)[self.rows]
        self._keys = table.keys[self.rows]
        self._marked = table.marked[self.rows]
        self._length = table.length[self.rows]
        b, m = self._scores.shape
        self.called = np.zeros((b, m), dtype=bool)
        self.spent = np.zeros(b)

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def calls(self) -> np.ndarray:
        """`(b,)` calls made by each episode."""
        return np.asarray(self.called.sum(axis=1), dtype=np.int64)

    def call(self, experts: np.ndarray, active: np.ndarray | None = None) -> None:
        """Episode e calls `experts[e]` where `active[e]` (all when None); an expert already
        called is not called (nor charged) again."""
        experts = np.asarray(experts, dtype=np.int64)
        on = np.ones(self.size, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        on &= experts >= 0
        rows = np.flatnonzero(on)
        cols = experts[rows]
        fresh = ~self.called[rows, cols]
        rows, cols = rows[fresh], cols[fresh]
        self.called[rows, cols] = True
        self.spent[rows] += self._costs[rows, cols]

    def seen(self) -> Seen:
        """The replies called so far (see `Seen`)."""
        c = self.called
        return Seen(
            keys=np.where(c, self._keys, HIDDEN),
            marked=c & self._marked,
            length=np.where(c, self._length, 0.0),
            called=c.copy(),
        )

    def settle(self, answer: np.ndarray) -> np.ndarray:
        """`(b,)` recorded score of the reply each episode returns (`answer[e]`, an expert it
        called; −1: no answer, score 0)."""
        answer = np.asarray(answer, dtype=np.int64)
        has = answer >= 0
        picked = np.maximum(answer, 0)
        rows = np.arange(self.size)
        if not self.called[rows[has], picked[has]].all():
            raise ValueError("a strategy returned the answer of an expert it never called")
        return np.where(has, self._scores[rows, picked], 0.0)
