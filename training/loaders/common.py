"""What loaders share: options, query ids, cost estimates, the import summary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from training.tokens import DEFAULT_OUTPUT_TOKENS

__all__ = ["LoadOptions", "OnMissing", "query_id"]

OnMissing = Literal["error", "drop"]


@dataclass(frozen=True)
class LoadOptions:
    """Options every loader accepts (ignored where they do not apply).

    `output_tokens`: the completion length assumed where a source records no responses.
    `include_contaminated`: keep RouteLLM's prompts that overlap its routers' training data.
    `prices`: a `prices.json` (USD per 1M tokens) for sources that record no costs
    (`mmlu-pro`, `zeroeval`); by default the loader looks for one beside or above the source.
    `on_missing`: what to do with a query some model has no score for: `"error"` stops naming
    it, `"drop"` removes the query from every model and says how many went.
    `notes`: lines a loader adds for the import summary (what it dropped, which tokenizer
    counted, how its grader agreed with the source's own); the loader appends, the caller reads.
    """

    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    include_contaminated: bool = False
    prices: Path | None = None
    on_missing: OnMissing = "error"
    notes: list[str] = field(default_factory=list, compare=False)


def query_id(prefix: str, text: str) -> str:
    """A stable id for a query text: `prefix-` and 16 hex digits of its SHA-1."""
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:16]}"
