from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from app.auth.service import Caller
from app.conversations.models import Conversation, Message
from app.conversations.service import (
    UNCHANGED,
    ConversationPatch,
    Conversations,
    Page,
    Unchanged,
)
from app.graphql.context import Info
from app.graphql.ids import parse_id
from app.usage import service as usage_service
from app.usage.graphql import UsageSummaryType


@strawberry.enum
class Role(Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


@strawberry.type(name="Message")
class MessageType:
    id: strawberry.ID
    conversation_id: strawberry.ID
    role: Role
    content: str
    token_count: int
    finish_reason: str | None
    latency_ms: int | None
    model: str | None
    metadata: JSON
    created_at: datetime

    @classmethod
    def of(cls, message: Message) -> MessageType:
        return cls(
            id=strawberry.ID(str(message.id)),
            conversation_id=strawberry.ID(str(message.conversation_id)),
            role=Role(message.role),
            content=message.content,
            token_count=message.token_count,
            finish_reason=message.finish_reason,
            latency_ms=message.latency_ms,
            model=message.model,
            metadata=JSON(message.public_metadata),
            created_at=message.created_at,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class MessageEdge:
    cursor: str
    node: MessageType


@strawberry.type
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page[Message]) -> MessageConnection:
        return cls(
            edges=[
                MessageEdge(cursor=cursor, node=MessageType.of(message))
                for message, cursor in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )


def _first_messages_loader(
    info: Info, caller: Caller
) -> DataLoader[tuple[uuid.UUID, int], Page[Message]]:
    conversations = info.context.runtime.conversations

    async def load(keys: list[tuple[uuid.UUID, int]]) -> list[Page[Message]]:
        pages: dict[tuple[uuid.UUID, int], Page[Message]] = {}
        for first in {first for _, first in keys}:
            ids = [cid for cid, size in keys if size == first]
            found = await conversations.first_messages(info.context.db, caller, ids, first)
            pages.update({(cid, first): page for cid, page in found.items()})
        return [pages[key] for key in keys]

    return DataLoader(load_fn=load)


def _usage_loader(info: Info, caller: Caller) -> DataLoader[uuid.UUID, UsageSummaryType]:
    async def load(keys: list[uuid.UUID]) -> list[UsageSummaryType]:
        summaries = await usage_service.by_conversation(info.context.db, caller, keys)
        return [UsageSummaryType.of(summaries[key]) for key in keys]

    return DataLoader(load_fn=load)


@strawberry.type(name="Conversation")
class ConversationType:
    id: strawberry.ID
    title: str
    model: str
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationType:
        return cls(
            id=strawberry.ID(str(conversation.id)),
            title=conversation.title,
            model=conversation.model,
            system_prompt=conversation.system_prompt,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
        )

    @strawberry.field(description="Messages, oldest first.")
    async def messages(
        self, info: Info, first: int | None = 50, after: str | None = None
    ) -> MessageConnection:
        first = 50 if first is None else first
        caller = await info.context.caller()
        conversation_id = uuid.UUID(self.id)
        if after is None:
            loader = info.context.loader(
                "first_messages", lambda: _first_messages_loader(info, caller)
            )
            return MessageConnection.of(await loader.load((conversation_id, first)))
        page = await info.context.runtime.conversations.messages(
            info.context.db, caller, conversation_id, first=first, after=after
        )
        return MessageConnection.of(page)

    @strawberry.field
    async def usage(self, info: Info) -> UsageSummaryType:
        caller = await info.context.caller()
        loader = info.context.loader("conversation_usage", lambda: _usage_loader(info, caller))
        return await loader.load(uuid.UUID(self.id))


@strawberry.type
class ConversationEdge:
    cursor: str
    node: ConversationType


@strawberry.type
class ConversationConnection:
    edges: list[ConversationEdge]
    page_info: PageInfo


@strawberry.input
class CreateConversationInput:
    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None


@strawberry.input
class UpdateConversationInput:
    title: str | None = strawberry.UNSET
    model: str | None = strawberry.UNSET
    system_prompt: str | None = strawberry.UNSET


def _patch(input: UpdateConversationInput) -> ConversationPatch:
    def given(value: str | None) -> str | Unchanged | None:
        return UNCHANGED if value is strawberry.UNSET else value

    return ConversationPatch(
        title=given(input.title), model=given(input.model), system_prompt=given(input.system_prompt)
    )


def _service(info: Info) -> Conversations:
    return info.context.runtime.conversations


@strawberry.type
class ConversationsQuery:
    @strawberry.field(description="Null when it does not exist or is not yours.")
    async def conversation(self, info: Info, id: strawberry.ID) -> ConversationType | None:
        caller = await info.context.caller()
        found = await _service(info).find(info.context.db, caller, parse_id(id, "conversation id"))
        return ConversationType.of(found) if found else None

    @strawberry.field(description="Most recently updated first.")
    async def conversations(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> ConversationConnection:
        first = 20 if first is None else first
        caller = await info.context.caller()
        page = await _service(info).list(info.context.db, caller, first=first, after=after)
        return ConversationConnection(
            edges=[
                ConversationEdge(cursor=cursor, node=ConversationType.of(conversation))
                for conversation, cursor in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )


@strawberry.type
class ConversationsMutation:
    @strawberry.mutation
    async def create_conversation(
        self, info: Info, input: CreateConversationInput | None = None
    ) -> ConversationType:
        caller = await info.context.caller()
        values = input or CreateConversationInput()
        conversation = await _service(info).create(
            info.context.db,
            caller,
            title=values.title,
            model=values.model,
            system_prompt=values.system_prompt,
        )
        return ConversationType.of(conversation)

    @strawberry.mutation
    async def update_conversation(
        self, info: Info, id: strawberry.ID, input: UpdateConversationInput
    ) -> ConversationType:
        caller = await info.context.caller()
        conversation = await _service(info).update(
            info.context.db, caller, parse_id(id, "conversation id"), _patch(input)
        )
        return ConversationType.of(conversation)

    @strawberry.mutation
    async def delete_conversation(self, info: Info, id: strawberry.ID) -> bool:
        caller = await info.context.caller()
        await _service(info).delete(info.context.db, caller, parse_id(id, "conversation id"))
        return True
