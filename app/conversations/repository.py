"""Every query on conversations and messages.

Queries that find or list take the owner and filter by it: on SQLite those conditions are the
only wall, and they keep the plans on the `(user_id, ...)` indexes everywhere. A few queries work
on rows the caller already reached through an owner-filtered query (a message's content by id,
finalising a reply): on PostgreSQL, Row Level Security filters them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Row,
    Select,
    Table,
    and_,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversations.cursors import Position
from app.conversations.models import Conversation, Message
from app.db import utcnow


async def get_conversation(
    db: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation | None:
    query = select(Conversation).where(
        Conversation.id == conversation_id, Conversation.user_id == user_id
    )
    return (await db.execute(query)).scalar_one_or_none()


async def count_conversations(db: AsyncSession, user_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(Conversation).where(Conversation.user_id == user_id)
    return int(await db.scalar(query) or 0)


async def conversation_for_reply(
    db: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> tuple[Conversation, datetime | None] | None:
    """The conversation, and the last checkpoint of its reply in progress if any: one query.

    The partial unique index allows at most one in-progress reply, so the join adds no rows.
    """
    in_progress = and_(
        Message.conversation_id == Conversation.id,
        Message.role == "assistant",
        Message.finish_reason.is_(None),
    )
    query = (
        select(Conversation, Message.updated_at)
        .outerjoin(Message, in_progress)
        .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    )
    row = (await db.execute(query)).first()
    return (row[0], row[1]) if row is not None else None


async def conversations_page(
    db: AsyncSession, user_id: uuid.UUID, limit: int, after: Position | None
) -> Sequence[Conversation]:
    """Up to `limit` conversations, most recently updated first, strictly after `after`."""
    query = select(Conversation).where(Conversation.user_id == user_id)
    if after is not None:
        query = query.where(
            tuple_(Conversation.updated_at, Conversation.id) < tuple_(after.at, after.id)
        )
    query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit)
    return (await db.execute(query)).scalars().all()


def _oldest_first(query: Select[Message]) -> Select[Message]:
    return query.order_by(Message.created_at, Message.id)


async def messages_page(
    db: AsyncSession,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    limit: int,
    after: Position | None,
) -> Sequence[Message]:
    query = select(Message).where(
        Message.conversation_id == conversation_id, Message.user_id == user_id
    )
    if after is not None:
        query = query.where(tuple_(Message.created_at, Message.id) > tuple_(after.at, after.id))
    return (await db.execute(_oldest_first(query).limit(limit))).scalars().all()


async def first_messages(
    db: AsyncSession, user_id: uuid.UUID, conversation_ids: Sequence[uuid.UUID], limit: int
) -> dict[uuid.UUID, list[Message]]:
    """The first `limit` messages of each conversation, in one statement (no N+1)."""
    ranked = (
        select(
            Message.id,
            func.row_number()
            .over(partition_by=Message.conversation_id, order_by=(Message.created_at, Message.id))
            .label("position"),
        )
        .where(Message.conversation_id.in_(conversation_ids), Message.user_id == user_id)
        .subquery()
    )
    query = _oldest_first(
        select(Message).join(ranked, ranked.c.id == Message.id).where(ranked.c.position <= limit)
    )
    pages: dict[uuid.UUID, list[Message]] = {cid: [] for cid in conversation_ids}
    for message in (await db.execute(query)).scalars():
        pages[message.conversation_id].append(message)
    return pages


async def history_turns(
    db: AsyncSession, conversation_id: uuid.UUID
) -> Sequence[Row[uuid.UUID, str, int]]:
    """The conversation's finished turns, newest first: id, role and token count (no content).

    Replies still streaming and empty replies are not part of the history a model sees.
    """
    query = (
        select(Message.id, Message.role, Message.token_count)
        .where(
            Message.conversation_id == conversation_id,
            Message.role.in_(("user", "assistant")),
            or_(Message.role == "user", Message.finish_reason.is_not(None)),
            Message.content != "",
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
    )
    return (await db.execute(query)).all()


async def message_contents(
    db: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    if not message_ids:
        return {}
    rows = await db.execute(select(Message.id, Message.content).where(Message.id.in_(message_ids)))
    return {row.id: row.content for row in rows}


async def delete_conversation(
    db: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> bool:
    result = await db.execute(
        delete(Conversation)
        .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
        .returning(Conversation.id)
    )
    return result.first() is not None


# Core statements on the tables, not ORM-enabled DML: these run for every reply, and the ORM's
# bulk-update machinery costs more than the round trip.
_CONVERSATIONS = cast("Table", Conversation.__table__)
_MESSAGES = cast("Table", Message.__table__)


async def touch_conversation(
    db: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID, at: datetime
) -> None:
    await db.execute(
        update(_CONVERSATIONS)
        .where(_CONVERSATIONS.c.id == conversation_id, _CONVERSATIONS.c.user_id == user_id)
        .values(updated_at=at)
    )


async def interrupt_stale_replies(
    db: AsyncSession, user_id: uuid.UUID, conversation_ids: Sequence[uuid.UUID], before: datetime
) -> None:
    """Mark `interrupted` the replies in progress whose last checkpoint is older than `before`:
    a process that died left them, and no reader should see them streaming forever."""
    await db.execute(
        update(_MESSAGES)
        .where(
            _MESSAGES.c.conversation_id.in_(conversation_ids),
            _MESSAGES.c.user_id == user_id,
            _MESSAGES.c.role == "assistant",
            _MESSAGES.c.finish_reason.is_(None),
            _MESSAGES.c.updated_at < before,
        )
        .values(finish_reason="interrupted", updated_at=utcnow())
    )


async def finalise_reply(db: AsyncSession, message: Message) -> bool:
    """Store a reply's final state, unless it was already finalised; whether it was written."""
    result = await db.execute(
        update(_MESSAGES)
        .where(_MESSAGES.c.id == message.id, _MESSAGES.c.finish_reason.is_(None))
        .values(
            content=message.content,
            token_count=message.token_count,
            finish_reason=message.finish_reason,
            latency_ms=message.latency_ms,
            input_tokens=message.input_tokens,
            output_tokens=message.output_tokens,
            cost_usd=message.cost_usd,
            metadata=message.meta,
            updated_at=message.updated_at,
        )
    )
    # An UPDATE's result is a CursorResult, which is what carries the row count.
    return bool(cast("CursorResult[Any]", result).rowcount)
