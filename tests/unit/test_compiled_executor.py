"""The compiled subscription path gives exactly graphql-core's results, for any selection set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from strawberry.scalars import JSON

from app.conversations.graphql import MessageType, Role
from app.graphql.executor import CompiledEventExecutor
from app.graphql.schema import Mutation, Query
from app.streaming.graphql import (
    STREAM_EVENT_TYPES,
    ContentBlockDeltaEvent,
    MessageDeltaEvent,
    MessageStartEvent,
    MessageStopEvent,
    StopDeltaType,
    StreamEventInterface,
    StreamEventType,
    TextDeltaType,
    UsageType,
)

MESSAGE_ID = strawberry.ID(str(uuid.uuid4()))
MESSAGE = MessageType(
    id=MESSAGE_ID,
    conversation_id=strawberry.ID(str(uuid.uuid4())),
    role=Role.ASSISTANT,
    content='Hello, "world" \n ✓',
    token_count=7,
    finish_reason="end_turn",
    latency_ms=12,
    model="llama-3.1-8b-instant",
    metadata=JSON({"input_tokens": 3, "nested": [1, {"x": None}]}),
    created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
)


def events() -> list[StreamEventInterface]:
    return [
        MessageStartEvent(
            type=StreamEventType.MESSAGE_START,
            message_id=MESSAGE_ID,
            message=MESSAGE,
            usage=UsageType(input_tokens=3, output_tokens=0),
        ),
        *(
            ContentBlockDeltaEvent(
                type=StreamEventType.CONTENT_BLOCK_DELTA,
                message_id=MESSAGE_ID,
                index=0,
                delta=TextDeltaType(type="text_delta", text=text),
            )
            for text in ("Hel", "lo", "")
        ),
        MessageDeltaEvent(
            type=StreamEventType.MESSAGE_DELTA,
            message_id=MESSAGE_ID,
            delta=StopDeltaType(stop_reason="end_turn", stop_sequence=None),
            usage=UsageType(input_tokens=3, output_tokens=2),
            latency_ms=40,
        ),
        MessageStopEvent(type=StreamEventType.MESSAGE_STOP, message_id=MESSAGE_ID, message=MESSAGE),
    ]


@strawberry.type(name="Subscription")
class Subscription:
    @strawberry.subscription
    async def stream_message(
        self, conversation_id: strawberry.ID, content: str
    ) -> AsyncGenerator[StreamEventInterface, None]:
        for event in events():
            yield event

    @strawberry.subscription
    async def broken(self) -> AsyncGenerator[StreamEventInterface, None]:
        yield ContentBlockDeltaEvent(
            type=StreamEventType.CONTENT_BLOCK_DELTA,
            message_id=MESSAGE_ID,
            index=0,
            delta=None,  # type: ignore[arg-type]  # a null where the schema says non-null
        )


def schema(compiled: bool) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=STREAM_EVENT_TYPES,
        execution_context_class=CompiledEventExecutor if compiled else None,
    )


async def results(compiled: bool, query: str, variables: dict[str, Any]) -> list[Any]:
    stream = await schema(compiled).subscribe(query, variable_values=variables)
    return [(result.data, [e.formatted for e in result.errors or []]) async for result in stream]


SELECTIONS = {
    "everything": """subscription { streamMessage(conversationId: "c", content: "x") {
        __typename type messageId
        ... on MessageStartEvent { message { id conversationId role content tokenCount
            finishReason latencyMs model metadata createdAt } usage { inputTokens outputTokens } }
        ... on ContentBlockDeltaEvent { index delta { type text } }
        ... on MessageDeltaEvent { delta { stopReason stopSequence } usage { outputTokens }
            latencyMs }
        ... on MessageStopEvent { message { id content } } } }""",
    "aliases-and-fragments": """subscription S {
        ev: streamMessage(conversationId: "c", content: "x") { kind: type ...Start
        ... on ContentBlockDeltaEvent { d: delta { t: text } d2: delta { type } } ...Stop } }
        fragment Start on MessageStartEvent { message { __typename id } u: usage { inputTokens } }
        fragment Stop on MessageStopEvent { message { c: content } }""",
    "skip-and-include": """subscription S($on: Boolean!) {
        streamMessage(conversationId: "c", content: "x") {
        type messageId @skip(if: $on) __typename @include(if: $on)
        ... on ContentBlockDeltaEvent @include(if: $on) { delta { text } } } }""",
    "interface-fields-only": """subscription {
        streamMessage(conversationId: "c", content: "x") { type messageId } }""",
    "repeated-fields-merge": """subscription { streamMessage(conversationId: "c", content: "x") {
        ... on MessageStartEvent { message { id } } ... on MessageStartEvent { message { model } }
        type type } }""",
}


@pytest.mark.parametrize("query", SELECTIONS.values(), ids=SELECTIONS.keys())
@pytest.mark.parametrize("flag", [True, False])
async def test_compiled_results_equal_graphql_cores(query: str, flag: bool) -> None:
    variables = {"on": flag}
    expected = await results(False, query, variables)
    assert len(expected) == len(events())
    assert await results(True, query, variables) == expected


async def test_a_null_in_a_non_null_field_falls_back_to_graphql_cores_error() -> None:
    query = "subscription { broken { type ... on ContentBlockDeltaEvent { delta { text } } } }"
    expected = await results(False, query, {})
    assert expected[0][1], "graphql-core reports the null"
    assert await results(True, query, {}) == expected
