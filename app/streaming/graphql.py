"""The `streamMessage` subscription: the reply pipeline's events as the `StreamEvent` interface."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from enum import Enum

import strawberry

from app.conversations.graphql import MessageType
from app.graphql.context import Info
from app.graphql.ids import parse_id
from app.streaming.events import (
    ContentBlockDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StreamEvent,
)
from app.streaming.service import ReplyInput


@strawberry.enum
class StreamEventType(Enum):
    MESSAGE_START = "message_start"
    CONTENT_BLOCK_DELTA = "content_block_delta"
    MESSAGE_DELTA = "message_delta"
    MESSAGE_STOP = "message_stop"


@strawberry.interface(name="StreamEvent")
class StreamEventInterface:
    type: StreamEventType
    message_id: strawberry.ID


@strawberry.type(name="Usage")
class UsageType:
    input_tokens: int
    output_tokens: int


@strawberry.type(name="TextDelta")
class TextDeltaType:
    type: str
    text: str


@strawberry.type(name="StopDelta")
class StopDeltaType:
    stop_reason: str
    stop_sequence: str | None


@strawberry.type
class MessageStartEvent(StreamEventInterface):
    message: MessageType
    usage: UsageType


@strawberry.type
class ContentBlockDeltaEvent(StreamEventInterface):
    index: int
    delta: TextDeltaType


@strawberry.type
class MessageDeltaEvent(StreamEventInterface):
    delta: StopDeltaType
    usage: UsageType
    latency_ms: int


@strawberry.type
class MessageStopEvent(StreamEventInterface):
    message: MessageType


# Only the interface is reachable from the schema's root types; the schema lists the rest.
STREAM_EVENT_TYPES = [
    MessageStartEvent,
    ContentBlockDeltaEvent,
    MessageDeltaEvent,
    MessageStopEvent,
]


def render(event: StreamEvent) -> StreamEventInterface:
    message_id = strawberry.ID(str(event.message_id))
    if isinstance(event, ContentBlockDelta):
        return ContentBlockDeltaEvent(
            type=StreamEventType.CONTENT_BLOCK_DELTA,
            message_id=message_id,
            index=event.index,
            delta=TextDeltaType(type="text_delta", text=event.text),
        )
    if isinstance(event, MessageStart):
        return MessageStartEvent(
            type=StreamEventType.MESSAGE_START,
            message_id=message_id,
            message=MessageType.of(event.message),
            usage=UsageType(input_tokens=event.input_tokens, output_tokens=0),
        )
    if isinstance(event, MessageDelta):
        return MessageDeltaEvent(
            type=StreamEventType.MESSAGE_DELTA,
            message_id=message_id,
            delta=StopDeltaType(stop_reason=event.stop_reason, stop_sequence=event.stop_sequence),
            usage=UsageType(input_tokens=event.input_tokens, output_tokens=event.output_tokens),
            latency_ms=event.latency_ms,
        )
    assert isinstance(event, MessageStop)
    return MessageStopEvent(
        type=StreamEventType.MESSAGE_STOP,
        message_id=message_id,
        message=MessageType.of(event.message),
    )


@strawberry.type(name="Subscription")
class StreamingSubscription:
    @strawberry.subscription(
        description="Store `content` as the next user message and stream the model's reply."
    )
    async def stream_message(
        self,
        info: Info,
        conversation_id: strawberry.ID,
        content: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[StreamEventInterface, None]:
        reply = await info.context.runtime.replies.start(
            info.context.credential,
            parse_id(conversation_id, "conversation id"),
            ReplyInput(content=content, max_tokens=max_tokens, temperature=temperature),
        )
        try:
            async for event in reply.events():
                yield render(event)
        finally:
            await reply.close()
