"""Every prompt composition sends, in one place.

=============  ==========================  ====================================================
template       placeholders                used for
=============  ==========================  ====================================================
``answer``     ``{index}`` ``{text}``      one candidate answer inside the two prompts below
``aggregate``  ``{answers}``               system message for the aggregator (`aggregate`,
                                           `moa`'s last step) and for `moa`'s later layers;
                                           the conversation follows it unchanged
``select``     ``{question}`` ``{answers}``  the judge's user message (`select`); it must
               ``{n}``                     answer with a candidate's number
=============  ==========================  ====================================================

A pool file overrides any of them under ``compose.templates`` (see `experts.pool`); a template
missing one of its placeholders is refused at start. Candidates are numbered, never named, so a
judge or aggregator cannot favour a model by its name.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["DEFAULT_TEMPLATES", "REQUIRED_FIELDS", "Templates"]

ANSWER = "[{index}] {text}"

AGGREGATE = (
    "You are given answers from several assistants to the user's latest question. Some may be "
    "wrong. Check them against each other, keep what is correct, fix what is not, and write "
    "one answer of your own to the question. Do not mention the other assistants.\n\n"
    "Answers:\n{answers}"
)

SELECT = (
    "Question:\n{question}\n\nCandidate answers:\n{answers}\n\n"
    "Which candidate answers the question best? Reply with its number only (1 to {n})."
)

#: The placeholders each template must contain.
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "answer": frozenset({"index", "text"}),
    "aggregate": frozenset({"answers"}),
    "select": frozenset({"question", "answers", "n"}),
}


@dataclass(frozen=True)
class Templates:
    """The composition prompts (see the module docstring for their placeholders)."""

    answer: str = ANSWER
    aggregate: str = AGGREGATE
    select: str = SELECT

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, str]) -> Templates:
        """The defaults with `overrides` applied; `ValueError` names a bad key or placeholder."""
        known = {f.name for f in fields(cls)}
        for name, text in overrides.items():
            if name not in known:
                raise ValueError(f"unknown template {name!r}; templates are {sorted(known)}")
            missing = REQUIRED_FIELDS[name] - _placeholders(text)
            if missing:
                raise ValueError(
                    f"template {name!r} lacks placeholder(s) "
                    + ", ".join("{" + m + "}" for m in sorted(missing))
                )
        return replace(cls(), **overrides)

    def answers(self, texts: Sequence[str]) -> str:
        """The numbered candidates, separated by blank lines."""
        return "\n\n".join(
            self.answer.format(index=i, text=t.strip()) for i, t in enumerate(texts, 1)
        )

    def aggregate_messages(
        self, messages: Sequence[Mapping[str, Any]], texts: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The conversation with the aggregation instructions and candidates as a system
        message, inserted after any system messages the client sent."""
        system = {"role": "system", "content": self.aggregate.format(answers=self.answers(texts))}
        head = 0
        while head < len(messages) and messages[head].get("role") in ("system", "developer"):
            head += 1
        return [*map(dict, messages[:head]), system, *map(dict, messages[head:])]

    def select_messages(self, question: str, texts: Sequence[str]) -> list[dict[str, Any]]:
        content = self.select.format(question=question, answers=self.answers(texts), n=len(texts))
        return [{"role": "user", "content": content}]


def _placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as exc:
        raise ValueError(f"template is not a valid format string: {exc}") from exc


DEFAULT_TEMPLATES = Templates()
