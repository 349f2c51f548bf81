from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_id, utcnow

ROLES = ("user", "assistant", "system")
IN_PROGRESS_INDEX = "uq_messages_one_reply_in_progress"


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # "My conversations, most recently updated first", walked by keyset cursor.
        Index("ix_conversations_user_id_updated_at_id", "user_id", "updated_at", "id"),
        # Target of the messages' composite foreign key: a message's owner is its conversation's.
        UniqueConstraint("id", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(100))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            ondelete="CASCADE",
            name="fk_messages_conversation_id_user_id_conversations",
        ),
        CheckConstraint("role IN ('user', 'assistant', 'system')", name="role"),
        # "This conversation's messages, oldest first", walked by keyset cursor.
        Index("ix_messages_conversation_id_created_at_id", "conversation_id", "created_at", "id"),
        # Usage and quota sums over one user's replies in a time range.
        Index("ix_messages_user_id_created_at", "user_id", "created_at"),
        # At most one reply streams per conversation, across every server process.
        Index(
            IN_PROGRESS_INDEX,
            "conversation_id",
            unique=True,
            postgresql_where=text("role = 'assistant' AND finish_reason IS NULL"),
            sqlite_where=text("role = 'assistant' AND finish_reason IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    token_count: Mapped[int] = mapped_column(default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[int | None]
    model: Mapped[str | None] = mapped_column(String(100))
    # Usage of the request that produced an assistant message, kept as columns so that usage and
    # quota sums run in SQL; `metadata` holds the rest (time to first token, provider request id).
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    cost_usd: Mapped[float | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Refreshed by every checkpoint of a streaming reply: a stale in-progress row was left by a
    # process that died.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def public_metadata(self) -> dict[str, Any]:
        """`metadata` as clients see it: the stored extras plus the usage columns."""
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }
        return {**self.meta, **{key: value for key, value in usage.items() if value is not None}}
