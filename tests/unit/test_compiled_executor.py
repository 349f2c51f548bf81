"""The compiled subscription path gives exactly graphql-core's results, for any selection set."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from app.conversations.graphql import MessageType, Role
from app.graphql.executor import COUNTS, CompiledEventExecutor
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


# --- the fast path runs, and steps aside for what Strawberry must run ----------------------------


async def test_the_compiled_path_runs_for_every_event() -> None:
    before = dataclasses.replace(COUNTS)
    query = SELECTIONS["everything"]
    assert await results(True, query, {}) == await results(False, query, {})
    assert COUNTS.compiled - before.compiled == len(events())
    assert COUNTS.generic == before.generic


class Denied(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


class Shout(FieldExtension):
    def resolve(self, next_: Callable[..., Any], source: Any, info: Any, **kwargs: Any) -> Any:
        return str(next_(source, info, **kwargs)).upper()


@strawberry.type
class Guarded:
    visible: str
    secret: str = strawberry.field(permission_classes=[Denied])
    loud: str = strawberry.field(extensions=[Shout()])


@strawberry.type(name="Subscription")
class GuardedSubscription:
    @strawberry.subscription
    async def guarded(self) -> AsyncGenerator[Guarded, None]:
        for _ in range(3):
            yield Guarded(visible="v", secret="s", loud="l")


def guarded_schema(compiled: bool) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        subscription=GuardedSubscription,
        execution_context_class=CompiledEventExecutor if compiled else None,
    )


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("visible secret", None),  # the permission refuses: an error, and `guarded` null
        ("visible loud", {"visible": "v", "loud": "L"}),  # the extension ran
    ],
)
async def test_fields_with_permissions_or_extensions_take_graphql_cores_path(
    selection: str, expected: dict[str, str] | None
) -> None:
    query = f"subscription {{ guarded {{ {selection} }} }}"

    async def run(compiled: bool) -> list[Any]:
        stream = await guarded_schema(compiled).subscribe(query)
        return [(r.data, [e.message for e in r.errors or []]) async for r in stream]

    before = dataclasses.replace(COUNTS)
    generic = await run(False)
    compiled = await run(True)

    assert compiled == generic
    assert COUNTS.compiled == before.compiled  # never the fast path
    if expected is None:
        assert generic[0] == (None, ["not for you"])
    else:
        assert generic[0] == ({"guarded": expected}, [])
    # A plain selection of the same type still compiles.
    before = dataclasses.replace(COUNTS)
    stream = await guarded_schema(True).subscribe("subscription { guarded { visible } }")
    assert [r.data async for r in stream] == [{"guarded": {"visible": "v"}}] * 3
    assert COUNTS.compiled - before.compiled == 3
