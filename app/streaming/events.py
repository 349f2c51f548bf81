"""The four events of one streamed reply, documented once. Both transports render exactly these.

    MessageStart        the assistant message exists (finish_reason null); usage.input_tokens
    ContentBlockDelta*  text in order (index 0); their concatenation is the stored reply
    MessageDelta        stop reason, cumulative output tokens, latency
    MessageStop         the stored, final assistant message

A failure after MessageStart ends the iteration with an `AppError` instead (the partial reply is
already stored with finish reason `error` or `cancelled` by then).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.conversations.models import Message
from app.llm.base import StopReason


@dataclass(frozen=True, slots=True)
class MessageStart:
    message: Message
    input_tokens: int

    @property
    def message_id(self) -> uuid.UUID:
        return self.message.id


@dataclass(frozen=True, slots=True)
class ContentBlockDelta:
    message_id: uuid.UUID
    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class MessageDelta:
    message_id: uuid.UUID
    stop_reason: StopReason
    input_tokens: int
    output_tokens: int
    latency_ms: int
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class MessageStop:
    message: Message

    @property
    def message_id(self) -> uuid.UUID:
        return self.message.id


StreamEvent = MessageStart | ContentBlockDelta | MessageDelta | MessageStop
