"""The SSE shim read by Anthropic's official Python SDK (`anthropic`), its stream helpers included.

The SDK's `messages.stream()` posts Anthropic's request body to `/v1/messages`; our route takes
our body at our path. The SDK's low-level `post(..., stream=True, stream_cls=...)` sends any body
to any path and parses the response as Anthropic's event stream, and `AsyncMessageStreamManager`
wraps that stream in the same `MessageStream` that `messages.stream()` returns: `text_stream`,
the typed events, and the accumulated final message (docs/clients.md shows this).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic, AsyncStream
from anthropic.lib.streaming import AsyncMessageStreamManager
from anthropic.types import Message, RawMessageStreamEvent

from tests.conftest import LiveServer
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api, User

pytestmark = pytest.mark.e2e

TOKENS = ["Anthropic", "'s", " SDK", " reads", " this", "."]
KEEPALIVE = 0.2
CREATE_KEY = "mutation ($name: String!) { createApiKey(name: $name) { secret } }"


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"stream_keepalive_seconds": KEEPALIVE}


def post_stream(
    client: AsyncAnthropic, conversation_id: str, content: str
) -> Awaitable[AsyncStream[RawMessageStreamEvent]]:
    """The documented request (see the snippet below), for the other tests."""
    return client.post(
        f"/api/v1/conversations/{conversation_id}/messages/stream",
        body={"content": content},
        cast_to=Message,
        stream=True,
        stream_cls=AsyncStream[RawMessageStreamEvent],
    )


async def api_key(api: Api, user: User) -> str:
    secret: str = (await api.gql(CREATE_KEY, {"name": "anthropic"}, user=user))["createApiKey"][
        "secret"
    ]
    return secret


async def test_message_stream_accumulates_the_final_message(
    server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    # Silent first, so keep-alives go out after message_start (and must not trip the SDK).
    fake_groq.enqueue(Scenario(tokens=TOKENS, first_token_delay=KEEPALIVE * 4, token_interval=0.02))
    first_request = len(fake_groq.requests)
    base_url, key, content = server.base_url, await api_key(api, user), "Stream to the SDK"
    texts = []

    # --- docs/clients.md: anthropic ---
    client = AsyncAnthropic(
        base_url=base_url,  # "http://127.0.0.1:8000"
        api_key=key,  # an API key (createApiKey), sent as x-api-key; or auth_token=<access token>
    )
    request = client.post(
        f"/api/v1/conversations/{conversation_id}/messages/stream",
        body={"content": content},
        cast_to=Message,
        stream=True,
        stream_cls=AsyncStream[RawMessageStreamEvent],
    )
    async with AsyncMessageStreamManager(request) as stream:
        async for text in stream.text_stream:
            texts.append(text)  # the reply as it is written
        message = await stream.get_final_message()  # id, content, stop_reason, usage
    # --- end of snippet ---

    upstream = fake_groq.requests[first_request]
    assert upstream.body["messages"][-1] == {"role": "user", "content": content}
    assert "".join(texts) == upstream.text_sent == "".join(TOKENS)
    assert message.role == "assistant" and message.model == upstream.body["model"]
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "".join(TOKENS)  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert upstream.usage is not None
    assert message.usage.output_tokens == upstream.usage["completion_tokens"]
    assert message.usage.input_tokens > 0
    stored = (await api.messages(user, conversation_id))[-1]
    assert (stored["id"], stored["content"], stored["finish_reason"]) == (
        message.id,
        "".join(TOKENS),
        "end_turn",
    )


async def test_the_sdks_events_are_anthropics_in_anthropics_order(
    server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    # An access token works too, as the SDK's bearer `auth_token`.
    client = AsyncAnthropic(base_url=server.base_url, auth_token=user.token, api_key=None)
    request = post_stream(client, conversation_id, "events")
    async with AsyncMessageStreamManager(request) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()

    # The SDK adds a `text` event (the snapshot so far) after each delta.
    assert kinds[:2] == ["message_start", "content_block_start"], kinds
    body = kinds[2:-3]
    assert body and body == ["content_block_delta", "text"] * (len(body) // 2), kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert final.content[0].text == "".join(TOKENS)  # type: ignore[union-attr]


async def test_keepalives_never_reach_the_sdks_raw_events(
    server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=["late"], first_token_delay=KEEPALIVE * 6))
    client = AsyncAnthropic(base_url=server.base_url, api_key=await api_key(api, user))
    stream = await post_stream(client, conversation_id, "wait")

    raw = [sse async for sse in AsyncStream.raw_events(stream.response)]

    comments = [line for sse in raw for line in sse.raw if line.startswith(":")]
    assert all(sse.event and sse.data for sse in raw), [(s.event, s.data) for s in raw]
    assert [sse.event for sse in raw][-1] == "message_stop"
    assert comments.count(": ping") >= 2, "the model's silence was kept alive"


async def test_an_upstream_failure_is_an_api_error_with_the_streams_error_body(
    server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=["half", " a", " reply"], drop_after=2))
    client = AsyncAnthropic(base_url=server.base_url, api_key=await api_key(api, user))
    request = post_stream(client, conversation_id, "fail")
    texts: list[str] = []

    async def read() -> None:
        async with AsyncMessageStreamManager(request) as stream:
            async for text in stream.text_stream:
                texts.append(text)

    with pytest.raises(anthropic.APIStatusError) as raised:
        await read()

    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "upstream_error"
    stored = (await api.messages(user, conversation_id))[-1]
    assert stored["finish_reason"] == "error" and stored["content"] == "".join(texts)


async def test_a_bad_key_is_the_sdks_authentication_error(server: LiveServer) -> None:
    client = AsyncAnthropic(base_url=server.base_url, api_key="cvk_not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        await post_stream(client, "00000000-0000-0000-0000-000000000000", "x")
    assert raised.value.body == {
        "error": {"type": "authentication_error", "message": "Invalid or revoked API key"}
    }
