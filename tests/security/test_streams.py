"""Replies under abuse: concurrent streams per user (counted in Redis, across processes), reply
starts per user, the daily token budget, and oversized messages. Every refusal happens before
the model is called (the fake Groq's request count does not move) and stores nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api, User
from tests.support.streams import StreamResult, Transport, transports, wait_until

pytestmark = pytest.mark.usefixtures("server_survives")

MAX_STREAMS = 2
REPLIES_PER_HOUR = 10
BUDGET = 1000
# A reply that lasts until its client leaves (400 tokens, 50 ms apart).
SLOW = Scenario(n_tokens=400, token_interval=0.05)


@pytest.fixture(scope="module")
def server_settings(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "redis_key_prefix": redis_prefix,
        "user_max_concurrent_streams": MAX_STREAMS,
        "reply_rate_limit_per_user": f"{REPLIES_PER_HOUR}/hour",
        "user_daily_token_budget": BUDGET,
        "stream_checkpoint_seconds": 0.2,
    }


def over(api: Api, name: str) -> Transport:
    return transports(api.http, api.ws_url)[name]


async def conversation(api: Api, user: User) -> str:
    return str((await api.create_conversation(user))["id"])


async def hold(transport: Transport, user: User, conversation_id: str) -> asyncio.Task[Any]:
    """A stream that has started (a delta arrived) and stays open until the task is cancelled."""
    started = asyncio.Event()

    async def seen(event: dict[str, Any]) -> None:
        if event["type"] == "content_block_delta":
            started.set()

    task = asyncio.create_task(transport.stream(user, conversation_id, "go on", on_event=seen))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait((task, waiter), timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert started.is_set(), task.result() if task.done() else "no delta in time"
    return task


async def leave(*streams: asyncio.Task[Any]) -> None:
    """The clients go away mid-stream (cancelling the task closes their connection)."""
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)


async def settled(api: Api, user: User, *conversation_ids: str) -> None:
    async def no_reply_in_progress() -> bool:
        for conversation_id in conversation_ids:
            rows = await api.messages(user, conversation_id)
            if any(r["finish_reason"] is None for r in rows if r["role"] == "assistant"):
                return False
        return True

    await wait_until(no_reply_in_progress, timeout=10)


def assert_sse_refused(result: StreamResult, error_type: str) -> dict[str, Any]:
    assert result.error is not None
    assert result.events == [], result
    assert result.error["status"] == 429, result.error
    assert result.error["body"]["error"]["type"] == error_type, result.error
    assert int(result.error["headers"]["retry-after"]) >= 1
    extensions: dict[str, Any] = result.error["body"]["error"]
    return extensions


def assert_graphql_refused(result: StreamResult, code: str) -> dict[str, Any]:
    assert result.error is not None
    assert result.events == [], result
    assert result.error["code"] == code, result.error
    extensions: dict[str, Any] = result.error["errors"][0]["extensions"]
    assert extensions["retryAfter"] >= 1
    return extensions


async def test_a_third_concurrent_stream_is_refused_before_the_model_and_a_disconnect_frees_a_slot(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    first, second, third = [await conversation(api, user) for _ in range(3)]
    fake_groq.enqueue(SLOW, SLOW)
    streams = [
        await hold(over(api, "sse"), user, first),
        await hold(over(api, "graphql-transport-ws"), user, second),
    ]
    calls = len(fake_groq.requests)

    assert_sse_refused(await over(api, "sse").stream(user, third, "a third"), "rate_limit_error")
    for protocol in ("graphql-transport-ws", "graphql-ws"):
        result = await over(api, protocol).stream(user, third, "a third")
        assert_graphql_refused(result, "RATE_LIMITED")
    assert len(fake_groq.requests) == calls  # the model was never asked
    assert await api.messages(user, third) == []  # and nothing was stored

    # Someone else's replies are not held up by this user's.
    bystander = await api.register()
    assert (
        await over(api, "sse").stream(bystander, await conversation(api, bystander), "hi")
    ).error is None

    # The first client goes away mid-stream: its reply ends `cancelled` and its slot is free.
    await leave(streams[0])
    await settled(api, user, first)
    assert (await api.messages(user, first))[-1]["finish_reason"] == "cancelled"
    for _ in range(20):  # the slot is given back just after the row is final
        result = await over(api, "sse").stream(user, third, "now there is room")
        if result.error is None:
            break
        await asyncio.sleep(0.05)
    assert result.error is None, result
    assert result.types[-1] == "message_stop"
    await leave(streams[1])
    await settled(api, user, second)


async def test_the_cap_holds_across_processes(
    api: Api, server: LiveServer, fake_groq: FakeGroq
) -> None:
    # A second server process on the same database and the same Redis.
    other, other_uvicorn, other_task = await start_server(server.settings)
    try:
        async with httpx.AsyncClient(base_url=other.base_url, timeout=30) as http:
            elsewhere = Api(http, other.ws_url)
            user = await api.register()
            here, there, third = [await conversation(api, user) for _ in range(3)]
            fake_groq.enqueue(SLOW, SLOW)
            streams = [
                await hold(over(api, "sse"), user, here),
                await hold(over(elsewhere, "sse"), user, there),
            ]
            calls = len(fake_groq.requests)
            for client in (api, elsewhere):
                refused = await over(client, "sse").stream(user, third, "one too many")
                assert_sse_refused(refused, "rate_limit_error")
            assert len(fake_groq.requests) == calls
            await leave(*streams)
            await settled(api, user, here, there)
    finally:
        await stop_server(other_uvicorn, other_task)


async def test_reply_starts_are_rate_limited_per_user(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    for n in range(REPLIES_PER_HOUR):
        result = await over(api, "sse").stream(user, await conversation(api, user), f"q{n}")
        assert result.error is None, result
    last = await conversation(api, user)
    calls = len(fake_groq.requests)
    assert_sse_refused(await over(api, "sse").stream(user, last, "one more"), "rate_limit_error")
    assert_graphql_refused(
        await over(api, "graphql-ws").stream(user, last, "one more"), "RATE_LIMITED"
    )
    assert len(fake_groq.requests) == calls
    assert await api.messages(user, last) == []


async def test_an_exhausted_daily_budget_is_quota_exceeded_before_the_model(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = await conversation(api, user)
    fake_groq.enqueue(Scenario(tokens=["A long answer."], prompt_tokens=700, completion_tokens=400))
    assert (await over(api, "sse").stream(user, conversation_id, "spend it")).error is None
    usage = await api.gql("{ usage { totalTokens } }", user=user)
    assert usage["usage"]["totalTokens"] == 1100 >= BUDGET
    calls = len(fake_groq.requests)

    assert_sse_refused(
        await over(api, "sse").stream(user, conversation_id, "more"), "quota_exceeded_error"
    )
    result = await over(api, "graphql-transport-ws").stream(user, conversation_id, "more")
    extensions = assert_graphql_refused(result, "QUOTA_EXCEEDED")
    reset = datetime.fromisoformat(extensions["resetAt"])
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert reset == midnight + timedelta(days=1)
    assert extensions["retryAfter"] <= 24 * 3600
    assert len(fake_groq.requests) == calls
    assert len(await api.messages(user, conversation_id)) == 2  # the first turn only


async def test_an_oversized_message_is_bad_input_and_stores_nothing(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = await conversation(api, user)
    calls = len(fake_groq.requests)
    too_long = "x" * 100_001
    rest = await over(api, "sse").stream(user, conversation_id, too_long)
    assert rest.error is not None
    assert rest.error["status"] == 422, rest.error
    assert rest.error["body"]["error"]["type"] == "invalid_request_error"
    for protocol in ("graphql-transport-ws", "graphql-ws"):
        result = await over(api, protocol).stream(user, conversation_id, too_long)
        assert result.error is not None
        assert result.error["code"] == "BAD_USER_INPUT", result.error
        assert "100000 characters" in result.error["errors"][0]["message"]
    assert len(fake_groq.requests) == calls
    assert await api.messages(user, conversation_id) == []

    # The limit itself is allowed, and reaches the model intact.
    exactly = "y" * 100_000
    assert (await over(api, "sse").stream(user, conversation_id, exactly)).error is None
    assert fake_groq.requests[-1].body["messages"][-1]["content"] == exactly
