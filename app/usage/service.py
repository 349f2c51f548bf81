"""Usage and cost, summed in SQL from the stored assistant messages (the only ledger there is).

Every assistant message counts as one request, whatever its outcome; its tokens are what the
provider reported (or tiktoken's count when it reported none) and its cost was priced from the
catalogue when it was stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Caller
from app.conversations.models import Message
from app.errors import BadUserInput


@dataclass(frozen=True, slots=True)
class ModelUsage:
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def estimated_cost_usd(self) -> float:
        return round(self.cost_usd, 10)  # sums of floats: no noise past a tenth of a nano-dollar


@dataclass(slots=True)
class UsageSummary:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    by_model: list[ModelUsage] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def estimated_cost_usd(self) -> float:
        return round(self.cost_usd, 10)

    def add(self, row: ModelUsage) -> None:
        self.requests += row.requests
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost_usd += row.cost_usd
        self.by_model.append(row)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_MODEL = func.coalesce(Message.model, "unknown").label("model")
_SUMS = (
    func.count(Message.id).label("requests"),
    func.coalesce(func.sum(Message.input_tokens), 0).label("input_tokens"),
    func.coalesce(func.sum(Message.output_tokens), 0).label("output_tokens"),
    func.coalesce(func.sum(Message.cost_usd), 0.0).label("cost_usd"),
)


def _model_usage(row: Row[*tuple[Any, ...]]) -> ModelUsage:
    return ModelUsage(
        model=row.model,
        requests=int(row.requests),
        input_tokens=int(row.input_tokens),
        output_tokens=int(row.output_tokens),
        cost_usd=float(row.cost_usd),
    )


async def summarize(
    db: AsyncSession, caller: Caller, *, since: datetime | None, until: datetime | None
) -> UsageSummary:
    conditions = [Message.user_id == caller.user_id, Message.role == "assistant"]
    if since is not None:
        conditions.append(Message.created_at >= _as_utc(since))
    if until is not None:
        conditions.append(Message.created_at < _as_utc(until))
    if since is not None and until is not None and _as_utc(since) > _as_utc(until):
        raise BadUserInput("`since` must not be after `until`")
    query = select(_MODEL, *_SUMS).where(*conditions).group_by(_MODEL).order_by(_MODEL)
    summary = UsageSummary()
    for row in await db.execute(query):
        summary.add(_model_usage(row))
    return summary


async def by_conversation(
    db: AsyncSession, caller: Caller, conversation_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, UsageSummary]:
    """Usage of several of the caller's conversations in one statement (for DataLoaders)."""
    query = (
        select(Message.conversation_id, _MODEL, *_SUMS)
        .where(
            Message.user_id == caller.user_id,
            Message.role == "assistant",
            Message.conversation_id.in_(conversation_ids),
        )
        .group_by(Message.conversation_id, _MODEL)
        .order_by(Message.conversation_id, _MODEL)
    )
    summaries = {cid: UsageSummary() for cid in conversation_ids}
    for row in await db.execute(query):
        summaries[row.conversation_id].add(_model_usage(row))
    return summaries


async def tokens_used_since(db: AsyncSession, user_id: uuid.UUID, since: datetime) -> int:
    """Tokens (input + output) of the user's replies since `since`: what the daily quota counts."""
    total = await db.scalar(
        select(
            func.coalesce(func.sum(Message.input_tokens), 0)
            + func.coalesce(func.sum(Message.output_tokens), 0)
        ).where(
            Message.user_id == user_id,
            Message.role == "assistant",
            Message.created_at >= since,
        )
    )
    return int(total or 0)
