"""What a router may know about an expert: its identity, prices and declared abilities."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ExpertDescriptor"]


@dataclass(frozen=True)
class ExpertDescriptor:
    """An expert as the router sees it.

    Prices are USD per one million tokens, as providers list them.
    """

    name: str
    input_price: float
    output_price: float
    context_length: int = 4096
    descriptor: str = ""
    skills: tuple[str, ...] = field(default_factory=tuple)
    #: Accepts `tools` (function calling). Routing never sends a request with tools elsewhere.
    tools: bool = True
    #: Kinds of content parts it reads: "text", "image", "audio", "file".
    modalities: tuple[str, ...] = ("text",)
    #: `max_tokens` it is sent when a request sets none (None: the gateway's default).
    default_max_tokens: int | None = None

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        """USD for a call with these token counts."""
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1e6
