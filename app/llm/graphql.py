from __future__ import annotations

import strawberry

from app.llm.models import ModelInfo, list_models


@strawberry.type(name="ModelInfo")
class ModelInfoType:
    id: str
    provider: str
    context_window: int
    max_output_tokens: int
    input_price_per_million: float
    output_price_per_million: float

    @classmethod
    def of(cls, model: ModelInfo) -> ModelInfoType:
        return cls(
            id=model.id,
            provider=model.provider,
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            input_price_per_million=model.input_price_per_million,
            output_price_per_million=model.output_price_per_million,
        )


@strawberry.type
class ModelsQuery:
    @strawberry.field(description="The model catalogue: limits and $/million-token prices.")
    def models(self) -> list[ModelInfoType]:
        return [ModelInfoType.of(model) for model in list_models()]
