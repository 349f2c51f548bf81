from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.auth.dependencies import CurrentCaller
from app.conversations.models import Conversation, Message
from app.conversations.service import MAX_PAGE, UNCHANGED, ConversationPatch
from app.deps import DbSession, RuntimeDep

router = APIRouter(prefix="/conversations", tags=["conversations"])

# Pydantic bounds stop oversized bodies early; the service owns the rules and their messages.
_MAX_FIELD = 64_000


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=_MAX_FIELD)
    model: str | None = Field(default=None, max_length=_MAX_FIELD)
    system_prompt: str | None = Field(default=None, max_length=_MAX_FIELD)


# Read straight from the ORM objects (from_attributes): the fields are the columns' names.
class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    model: str
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationOut:
        return cls.model_validate(conversation)


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    conversation_id: uuid.UUID
    role: str
    content: str
    token_count: int
    finish_reason: str | None
    latency_ms: int | None
    model: str | None
    metadata: dict[str, Any] = Field(validation_alias="public_metadata")
    created_at: datetime

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        return cls.model_validate(message)


class ConversationList(BaseModel):
    data: list[ConversationOut]
    next_cursor: str | None


class MessageList(BaseModel):
    data: list[MessageOut]
    next_cursor: str | None


# Validated by the service (1-100), so REST and GraphQL refuse the same values the same way.
Limit = Annotated[int, Query(description=f"Page size, 1 to {MAX_PAGE}")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    caller: CurrentCaller, db: DbSession, runtime: RuntimeDep, body: ConversationIn | None = None
) -> ConversationOut:
    values = body or ConversationIn()
    conversation = await runtime.conversations.create(
        db, caller, title=values.title, model=values.model, system_prompt=values.system_prompt
    )
    return ConversationOut.of(conversation)


@router.get("")
async def list_conversations(
    caller: CurrentCaller,
    db: DbSession,
    runtime: RuntimeDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ConversationList:
    page = await runtime.conversations.list(db, caller, first=limit, after=cursor)
    return ConversationList(
        data=[ConversationOut.of(c) for c in page.items],
        next_cursor=page.end_cursor if page.has_next else None,
    )


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: uuid.UUID, caller: CurrentCaller, db: DbSession, runtime: RuntimeDep
) -> ConversationOut:
    return ConversationOut.of(await runtime.conversations.get(db, caller, conversation_id))


@router.patch("/{conversation_id}")
async def update_conversation(
    conversation_id: uuid.UUID,
    body: ConversationIn,
    caller: CurrentCaller,
    db: DbSession,
    runtime: RuntimeDep,
) -> ConversationOut:
    sent = body.model_fields_set
    patch = ConversationPatch(
        title=body.title if "title" in sent else UNCHANGED,
        model=body.model if "model" in sent else UNCHANGED,
        system_prompt=body.system_prompt if "system_prompt" in sent else UNCHANGED,
    )
    return ConversationOut.of(
        await runtime.conversations.update(db, caller, conversation_id, patch)
    )


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_conversation(
    conversation_id: uuid.UUID, caller: CurrentCaller, db: DbSession, runtime: RuntimeDep
) -> Response:
    await runtime.conversations.delete(db, caller, conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{conversation_id}/messages")
async def list_messages(
    conversation_id: uuid.UUID,
    caller: CurrentCaller,
    db: DbSession,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> MessageList:
    page = await runtime.conversations.messages(
        db, caller, conversation_id, first=limit, after=cursor
    )
    return MessageList(
        data=[MessageOut.of(m) for m in page.items],
        next_cursor=page.end_cursor if page.has_next else None,
    )
