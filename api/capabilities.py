"""What a chat request needs from an expert, and which experts lack it.

The pool file says what each expert can take (`tools`, `modalities`, `context_length`, checked
when the pool loads); a request needs tools when it sends `tools` or `functions`, a modality
for each kind of content part it sends (`image_url` → image, `input_audio` → audio, `file` →
file), and a context that holds its prompt (estimated) with room for an answer: a `max_tokens`
beyond what the context leaves is cut to fit for each expert (`api.limits.completion_tokens`),
as OpenAI's limit is an upper bound, so a large one never makes a request unroutable. Routing
never chooses an expert that lacks what the request needs; an expert named directly that lacks
it answers a 400 naming what is missing, before any call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.errors import InvalidRequest
from api.schemas import ChatCompletionRequest
from router.descriptor import ExpertDescriptor
from router.query import estimate_tokens

__all__ = ["Needs", "check_expert", "needs", "unfit"]

_PART_MODALITY = {"text": "text", "image_url": "image", "input_audio": "audio", "file": "file"}


@dataclass(frozen=True)
class Needs:
    tools: bool
    modalities: frozenset[str]
    prompt_tokens: int
    completion_tokens: int

    @property
    def param(self) -> str:
        """The request field to name in a 400 when no expert has what this needs."""
        return "tools" if self.tools else "messages"


def needs(
    request: ChatCompletionRequest, messages: Sequence[Mapping[str, Any]] | None = None
) -> Needs:
    """What `request` needs; `messages`: its `role_and_content()`, when the caller has it."""
    extra = request.model_extra or {}
    modalities = {"text"}
    for message in request.messages:
        if isinstance(message.content, list):
            for part in message.content:
                kind = str(part.get("type", "text"))
                modalities.add(_PART_MODALITY.get(kind, kind))
    if messages is None:
        messages = request.role_and_content()
    return Needs(
        tools=bool(extra.get("tools") or extra.get("functions")),
        modalities=frozenset(modalities),
        prompt_tokens=estimate_tokens(messages),
        # `max_tokens` is cut to each expert's context when sent; the prompt must fit with room
        # for at least one token of answer
        completion_tokens=1,
    )


def unfit(expert: ExpertDescriptor, need: Needs) -> str | None:
    """Why `expert` cannot take a request with these needs (None: it can)."""
    if need.tools and not expert.tools:
        return "does not support tools (pool: tools)"
    missing = sorted(need.modalities - set(expert.modalities))
    if missing:
        return f"does not read {', '.join(missing)} content (pool: modalities)"
    wanted = need.prompt_tokens + need.completion_tokens
    if wanted > expert.context_length:
        return (
            f"context of {expert.context_length} tokens is shorter than the ~{need.prompt_tokens} "
            f"prompt tokens (+{need.completion_tokens} for the answer)"
        )
    return None


def check_expert(expert: ExpertDescriptor, request: ChatCompletionRequest) -> None:
    """Raise a 400 when `request` names `expert` directly and it cannot take it (tools,
    modalities; the context is left to the expert, which knows its tokenizer)."""
    need = needs(request)
    reason = unfit(expert, Needs(need.tools, need.modalities, 0, 0))
    if reason is not None:
        raise InvalidRequest(
            f"expert {expert.name!r} {reason}; send it a request it can take, or use coe-auto "
            "to route to an expert that can",
            param=need.param,
        )
