"""Wire models of the OpenAI-compatible surface, and coe's own request options.

Unknown OpenAI parameters (`top_p`, `stop`, `seed`, `tools`, ...) are accepted and passed to the
expert unchanged; the ones coe reads are validated here so that bad values get a 400 naming them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CoeOptions",
    "FeedbackRequest",
    "PromptMessage",
    "ReplyMessage",
    "StreamOptions",
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(max_length=256)] | None = None


class PromptMessage(_Message):
    """A system, developer or user turn: its `content` is required (text or content parts)."""

    role: Literal["system", "developer", "user"]
    content: str | list[dict[str, Any]]


class ReplyMessage(_Message):
    """An assistant, tool or function turn: `content` may be null (a tool call carries none)."""

    role: Literal["assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


#: One chat message; which fields it needs depends on its `role` (the schema says so too).
ChatMessage = Annotated[PromptMessage | ReplyMessage, Field(discriminator="role")]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class CoeOptions(BaseModel):
    """Routing options, sent under `"coe"` in the body (`extra_body` with the openai client)."""

    model_config = ConfigDict(extra="forbid")

    router: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="router name for this request"
    )
    cost_weight: Annotated[float, Field(ge=0)] | None = None
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    k: Annotated[int, Field(ge=1, le=16)] | None = None
    strategy: Literal["aggregate", "moa", "select", "vote"] | None = Field(
        default=None, description="coe-compose: how the k answers become one"
    )
    layers: Annotated[int, Field(ge=1, le=8)] | None = Field(
        default=None, description="coe-compose with strategy moa: rounds of proposers"
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        default=None, description="coe-compose: deadline for the whole composition"
    )
    stickiness: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="coe-auto: predicted gain needed to switch a conversation's expert",
    )


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=1, description="coe returns one choice")] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    coe: CoeOptions | None = None

    def upstream_body(self, default_max_tokens: int) -> dict[str, Any]:
        """The body to send an expert: coe's options removed, a token limit always set."""
        body = self.model_dump(
            exclude_none=True, exclude={"coe", "model", "stream", "stream_options"}
        )
        limit = self.max_completion_tokens or self.max_tokens or default_max_tokens
        body.pop("max_completion_tokens", None)
        body["max_tokens"] = limit
        return body

    def role_and_content(self) -> list[dict[str, Any]]:
        """Each message's `role` and `content`: all that routing and the token estimates read
        of it (`router.query`), without dumping the whole message (three dumps a request were
        2 % of its CPU)."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: how good a served answer was, for learning routers and reports."""

    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, Field(min_length=1, max_length=128, description="the answer's `id`")]
    score: Annotated[float, Field(ge=0, le=1, description="0 = useless, 1 = perfect")]
    comment: Annotated[str, Field(max_length=2000)] | None = None
