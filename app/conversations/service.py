"""Conversations: validation and ownership. GraphQL and REST both call exactly these functions.

Another user's conversation and a conversation that does not exist give the same `NotFound`, so
no answer reveals that an id exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, auto
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Caller
from app.conversations import repository
from app.conversations.cursors import decode_cursor, encode_cursor
from app.conversations.models import Conversation, Message
from app.db import utcnow
from app.errors import BadUserInput, NotFound
from app.llm.models import get_model
from app.ratelimit.service import Limits

DEFAULT_TITLE = "New conversation"
MAX_TITLE = 200
MAX_SYSTEM_PROMPT = 32_000
MIN_PAGE, MAX_PAGE = 1, 100
NOT_FOUND = "Conversation not found"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


class Unchanged(Enum):
    UNCHANGED = auto()


UNCHANGED = Unchanged.UNCHANGED


@dataclass(frozen=True, slots=True)
class ConversationPatch:
    """What a client sent to change: a field it left out is UNCHANGED; `None` is an explicit null
    (which clears the system prompt and is refused for title and model)."""

    title: str | Unchanged | None = UNCHANGED
    model: str | Unchanged | None = UNCHANGED
    system_prompt: str | Unchanged | None = UNCHANGED


def _no_nul(value: str, what: str) -> str:
    # PostgreSQL cannot store NUL in text; refused the same way on SQLite.
    if "\x00" in value:
        raise BadUserInput(f"{what} must not contain NUL characters")
    return value


def _title(value: str) -> str:
    title = _no_nul(value, "Title").strip()
    if not title:
        raise BadUserInput("Title must not be blank")
    if len(title) > MAX_TITLE:
        raise BadUserInput(f"Title must be at most {MAX_TITLE} characters")
    return title


def _system_prompt(value: str) -> str | None:
    if len(value) > MAX_SYSTEM_PROMPT:
        raise BadUserInput(f"System prompt must be at most {MAX_SYSTEM_PROMPT} characters")
    return value if _no_nul(value, "System prompt").strip() else None


def _model(value: str, available: Callable[[str], bool]) -> str:
    model = get_model(value)
    if not available(model.provider):
        raise BadUserInput(f"Model {model.id} is not available on this server")
    return model.id


def page_size(value: int) -> int:
    if not MIN_PAGE <= value <= MAX_PAGE:
        raise BadUserInput(f"Page size must be between {MIN_PAGE} and {MAX_PAGE}")
    return value


def _page(rows: Sequence[T], size: int, key: Callable[[T], tuple[datetime, uuid.UUID]]) -> Page[T]:
    items = list(rows[:size])
    return Page(
        items=items,
        cursors=[encode_cursor(*key(item)) for item in items],
        has_next=len(rows) > size,
    )


class Conversations:
    def __init__(
        self,
        *,
        default_model: str,
        provider_available: Callable[[str], bool],
        stale_reply_after: timedelta,
        limits: Limits,
        max_per_user: int,
    ) -> None:
        self._default_model = default_model
        self._available = provider_available
        self._stale_reply_after = stale_reply_after
        self._limits = limits
        self._max_per_user = max_per_user

    async def _settle_dead_replies(
        self, db: AsyncSession, caller: Caller, conversation_ids: Sequence[uuid.UUID]
    ) -> None:
        # A reply a dead process left streaming is marked `interrupted` when it is found, by the
        # next reply in its conversation or by any reader: nobody sees it streaming forever.
        before = utcnow() - self._stale_reply_after
        await repository.interrupt_stale_replies(db, caller.user_id, conversation_ids, before)

    async def create(
        self,
        db: AsyncSession,
        caller: Caller,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Conversation:
        await self._limits.check_write(caller.user_id)
        now = utcnow()
        conversation = Conversation(
            user_id=caller.user_id,
            title=_title(title) if title is not None else DEFAULT_TITLE,
            model=_model(model if model is not None else self._default_model, self._available),
            system_prompt=_system_prompt(system_prompt) if system_prompt is not None else None,
            meta={},
            created_at=now,
            updated_at=now,
        )
        # Counted in the caller's transaction: conversations created earlier in it (aliased
        # mutations) count too. Concurrent transactions may pass the cap by one each.
        if await repository.count_conversations(db, caller.user_id) >= self._max_per_user:
            raise BadUserInput(f"At most {self._max_per_user} conversations per account")
        db.add(conversation)
        await db.flush()
        return conversation

    async def get(
        self, db: AsyncSession, caller: Caller, conversation_id: uuid.UUID
    ) -> Conversation:
        conversation = await repository.get_conversation(db, caller.user_id, conversation_id)
        if conversation is None:
            raise NotFound(NOT_FOUND)
        return conversation

    async def find(
        self, db: AsyncSession, caller: Caller, conversation_id: uuid.UUID
    ) -> Conversation | None:
        return await repository.get_conversation(db, caller.user_id, conversation_id)

    async def update(
        self, db: AsyncSession, caller: Caller, conversation_id: uuid.UUID, patch: ConversationPatch
    ) -> Conversation:
        await self._limits.check_write(caller.user_id)
        # Validate everything before touching the row: bad input changes nothing.
        if patch.title is None or patch.model is None:
            raise BadUserInput("title and model cannot be null; leave a field out to keep it")
        changes: dict[str, str | None] = {}
        if patch.title is not UNCHANGED:
            changes["title"] = _title(patch.title)
        if patch.model is not UNCHANGED:
            changes["model"] = _model(patch.model, self._available)
        if patch.system_prompt is not UNCHANGED:
            prompt = patch.system_prompt
            changes["system_prompt"] = _system_prompt(prompt) if prompt is not None else None
        conversation = await self.get(db, caller, conversation_id)
        for name, value in changes.items():
            setattr(conversation, name, value)
        conversation.updated_at = utcnow()
        await db.flush()
        return conversation

    async def delete(self, db: AsyncSession, caller: Caller, conversation_id: uuid.UUID) -> None:
        await self._limits.check_write(caller.user_id)
        if not await repository.delete_conversation(db, caller.user_id, conversation_id):
            raise NotFound(NOT_FOUND)

    async def list(
        self, db: AsyncSession, caller: Caller, *, first: int, after: str | None
    ) -> Page[Conversation]:
        size = page_size(first)
        position = decode_cursor(after) if after is not None else None
        rows = await repository.conversations_page(db, caller.user_id, size + 1, position)
        return _page(rows, size, lambda c: (c.updated_at, c.id))

    async def messages(
        self,
        db: AsyncSession,
        caller: Caller,
        conversation_id: uuid.UUID,
        *,
        first: int,
        after: str | None,
    ) -> Page[Message]:
        size = page_size(first)
        position = decode_cursor(after) if after is not None else None
        await self.get(db, caller, conversation_id)
        await self._settle_dead_replies(db, caller, [conversation_id])
        rows = await repository.messages_page(
            db, caller.user_id, conversation_id, size + 1, position
        )
        return _page(rows, size, lambda m: (m.created_at, m.id))

    async def first_messages(
        self, db: AsyncSession, caller: Caller, conversation_ids: Sequence[uuid.UUID], first: int
    ) -> dict[uuid.UUID, Page[Message]]:
        """First pages of several of the caller's conversations in one query (DataLoaders)."""
        size = page_size(first)
        await self._settle_dead_replies(db, caller, conversation_ids)
        rows = await repository.first_messages(db, caller.user_id, conversation_ids, size + 1)
        return {
            cid: _page(messages, size, lambda m: (m.created_at, m.id))
            for cid, messages in rows.items()
        }
