from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from app.auth.dependencies import CurrentCaller
from app.deps import DbSession
from app.usage import service
from app.usage.service import UsageSummary

router = APIRouter(tags=["usage"])


class ModelUsageOut(BaseModel):
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: float


class UsageOut(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    estimated_cost_usd: float
    by_model: list[ModelUsageOut]

    @classmethod
    def of(cls, summary: UsageSummary) -> UsageOut:
        return cls(
            requests=summary.requests,
            input_tokens=summary.input_tokens,
            output_tokens=summary.output_tokens,
            total_tokens=summary.total_tokens,
            estimated_cost_usd=round(summary.cost_usd, 10),
            by_model=[
                ModelUsageOut(
                    model=row.model,
                    requests=row.requests,
                    input_tokens=row.input_tokens,
                    output_tokens=row.output_tokens,
                    estimated_cost_usd=round(row.cost_usd, 10),
                )
                for row in summary.by_model
            ],
        )


@router.get("/usage")
async def usage(
    caller: CurrentCaller,
    db: DbSession,
    since: datetime | None = None,
    until: datetime | None = None,
) -> UsageOut:
    """The same figures as the GraphQL `usage` query."""
    return UsageOut.of(await service.summarize(db, caller, since=since, until=until))
