from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from app.auth.dependencies import CurrentCaller
from app.deps import DbSession
from app.usage import service

router = APIRouter(tags=["usage"])


class ModelUsageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: float


class UsageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    estimated_cost_usd: float
    by_model: list[ModelUsageOut]


@router.get("/usage")
async def usage(
    caller: CurrentCaller,
    db: DbSession,
    since: datetime | None = None,
    until: datetime | None = None,
) -> UsageOut:
    """The same figures as the GraphQL `usage` query."""
    summary = await service.summarize(db, caller, since=since, until=until)
    return UsageOut.model_validate(summary, from_attributes=True)
