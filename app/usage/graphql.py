from __future__ import annotations

from datetime import datetime

import strawberry

from app.graphql.context import Info
from app.usage import service
from app.usage.service import UsageSummary


@strawberry.type(name="ModelUsage")
class ModelUsageType:
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: float


@strawberry.type(name="UsageSummary")
class UsageSummaryType:
    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    estimated_cost_usd: float
    by_model: list[ModelUsageType]

    @classmethod
    def of(cls, summary: UsageSummary) -> UsageSummaryType:
        return cls(
            requests=summary.requests,
            input_tokens=summary.input_tokens,
            output_tokens=summary.output_tokens,
            total_tokens=summary.total_tokens,
            estimated_cost_usd=summary.estimated_cost_usd,
            by_model=[
                ModelUsageType(
                    model=row.model,
                    requests=row.requests,
                    input_tokens=row.input_tokens,
                    output_tokens=row.output_tokens,
                    estimated_cost_usd=row.estimated_cost_usd,
                )
                for row in summary.by_model
            ],
        )


@strawberry.type
class UsageQuery:
    @strawberry.field
    async def usage(
        self, info: Info, since: datetime | None = None, until: datetime | None = None
    ) -> UsageSummaryType:
        caller = await info.context.caller()
        summary = await service.summarize(info.context.db, caller, since=since, until=until)
        return UsageSummaryType.of(summary)
