"""Composition: several experts answer one request and one answer comes out of them.

`strategies` holds the four ways of combining (aggregate, moa, select, vote) over any
expert-calling function; `templates` every prompt they send; `answers` the short-answer
normalisation that voting and grading share.
"""

from experts.compose.base import Budget, CompositionFailed, Outcome, Reply, SubAnswer
from experts.compose.strategies import STRATEGIES, Composition
from experts.compose.templates import DEFAULT_TEMPLATES, Templates

__all__ = [
    "DEFAULT_TEMPLATES",
    "STRATEGIES",
    "Budget",
    "Composition",
    "CompositionFailed",
    "Outcome",
    "Reply",
    "SubAnswer",
    "Templates",
]
