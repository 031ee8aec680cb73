"""What loaders share: options, query ids, cost estimates."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from training.tokens import DEFAULT_OUTPUT_TOKENS

__all__ = ["LoadOptions", "query_id"]


@dataclass(frozen=True)
class LoadOptions:
    """Options every loader accepts (ignored where they do not apply).

    `output_tokens`: the completion length assumed where a source records no responses.
    `include_contaminated`: keep RouteLLM's prompts that overlap its routers' training data.
    """

    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    include_contaminated: bool = False


def query_id(prefix: str, text: str) -> str:
    """A stable id for a query text: `prefix-` and 16 hex digits of its SHA-1."""
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:16]}"
