"""The model catalogue: which models a conversation may use, their limits and their prices.

A model name from a client is only ever looked up here; it never becomes a URL or reaches the
provider unchecked.

Prices are US dollars per million tokens as published on https://groq.com/pricing. They were last
read in June 2026 (openai/gpt-oss-120b's $0.15 / $0.60 cross-checked against a 2026-06-04 summary
of that page); the machine this was written on has no internet access, so re-check them before
billing anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from app.errors import BadUserInput

ProviderName = Literal["groq", "echo"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: ProviderName
    context_window: int
    max_output_tokens: int
    input_price_per_million: float
    output_price_per_million: float

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_price_per_million
            + output_tokens * self.output_price_per_million
        ) / 1_000_000


_MODELS = (
    ModelInfo("llama-3.1-8b-instant", "groq", 131_072, 131_072, 0.05, 0.08),
    ModelInfo("llama-3.3-70b-versatile", "groq", 131_072, 32_768, 0.59, 0.79),
    ModelInfo("openai/gpt-oss-20b", "groq", 131_072, 65_536, 0.075, 0.30),
    ModelInfo("openai/gpt-oss-120b", "groq", 131_072, 65_536, 0.15, 0.60),
    # Offline and free: replies are built from the prompt (see app.llm.echo).
    ModelInfo("echo", "echo", 32_768, 8_192, 0.0, 0.0),
)

CATALOGUE: MappingProxyType[str, ModelInfo] = MappingProxyType({m.id: m for m in _MODELS})
MAX_MODEL_NAME = 100


def get_model(model_id: str) -> ModelInfo:
    """The catalogue entry for `model_id`, or a BAD_USER_INPUT naming the choices."""
    model = CATALOGUE.get(model_id) if len(model_id) <= MAX_MODEL_NAME else None
    if model is None:
        raise BadUserInput(f"Unknown model; choose one of: {', '.join(CATALOGUE)}")
    return model


def list_models() -> list[ModelInfo]:
    return list(CATALOGUE.values())
