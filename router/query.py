"""Which text of a chat request to route on.

MiniLM reads only its first 256 word pieces, so a prompt that opens with a long system prompt,
a shared few-shot block or a chat history would embed the same for every query. Route on the last
user turn instead, and keep its tail when it is long: the question usually comes last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["estimate_tokens", "routing_text"]

#: Characters kept from the end of a long user turn (about 256 word pieces of English).
MAX_ROUTING_CHARS = 1200


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def routing_text(messages: Sequence[Mapping[str, Any]], max_chars: int = MAX_ROUTING_CHARS) -> str:
    """The text a router should see for a chat: the last user turn, its tail if long.

    >>> routing_text([{"role": "system", "content": "Be brief."},
    ...               {"role": "user", "content": "What is 2+2?"}])
    'What is 2+2?'
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _content_text(message.get("content")).strip()
            if text:
                return text[-max_chars:]
    # No user turn (unusual but valid): fall back to whatever text there is.
    joined = "\n".join(_content_text(m.get("content")) for m in messages).strip()
    return joined[-max_chars:]


def max_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """An upper bound on a prompt's token count, for hard cost caps: byte-level BPE and
    SentencePiece with byte fallback never make more tokens than UTF-8 bytes, and a chat
    template adds a handful per message (16 is generous for ChatML, Llama and Gemma)."""
    size = sum(len(_content_text(m.get("content")).encode()) for m in messages)
    return size + 16 * len(messages) + 16


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A rough prompt token count (4 characters a token) for cost estimates before a call."""
    chars = sum(len(_content_text(m.get("content"))) for m in messages)
    return max(1, chars // 4 + 4 * len(messages))
