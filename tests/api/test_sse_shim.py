"""The SSE shim's framing, as bytes on the wire: Anthropic's block events around the text
(without ids), the reply's own numbering, the keep-alive's form, and the headers credentials may
come in. The clients that read this framing are driven in tests/e2e (anthropic SDK, httpx-sse,
eventsource-parser, the browser's EventSource)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.errors import (
    AppError,
    BadUserInput,
    Conflict,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
    UpstreamError,
)
from app.streaming.sse import error_type
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api, User
from tests.support.streams import StreamResult, transports

KEEPALIVE = 0.2
# Anthropic's error types (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
}
CREATE_KEY = "mutation ($name: String!) { createApiKey(name: $name) { secret } }"


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"stream_keepalive_seconds": KEEPALIVE, "llm_timeout_seconds": 3}


async def stream(api: Api, user: User, content: str = "Frame it") -> StreamResult:
    conversation_id = (await api.create_conversation(user))["id"]
    return await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, content)


async def test_block_events_frame_the_text_and_take_no_ids(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    fake_groq.enqueue(Scenario(tokens=["Block", "s ", "around"], token_interval=0.01))

    result = await stream(api, user)

    names = [name for name, _, _ in result.sse]
    deltas = len(result.deltas)
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    # The ids count the reply's own events, the same numbers over every transport.
    ids = [event_id for _, event_id, _ in result.sse]
    assert ids == [0, None, *range(1, deltas + 1), None, deltas + 1, deltas + 2]
    by_name = {name: data for name, _, data in result.sse}
    assert by_name["content_block_start"] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert by_name["content_block_stop"] == {"type": "content_block_stop", "index": 0}
    message = by_name["message_start"]["message"]
    assert "stop_sequence" in message and message["stop_sequence"] is None
    assert message["stop_reason"] is None and message["content"] == []
    assert result.text == "Blocks around"


async def test_a_reply_without_text_still_has_one_empty_block(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    fake_groq.enqueue(Scenario(tokens=[]))

    result = await stream(api, user)

    names = [name for name, _, _ in result.sse]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [event_id for _, event_id, _ in result.sse] == [0, None, None, 1, 2]


async def test_an_error_mid_stream_ends_it_with_the_next_id_and_an_anthropic_type(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    fake_groq.enqueue(Scenario(tokens=["par", "tial", "more"], drop_after=2))

    result = await stream(api, user)

    names = [name for name, _, _ in result.sse]
    assert names[:2] == ["message_start", "content_block_start"], names
    assert set(names[2:-1]) == {"content_block_delta"}, names
    assert names[-1] == "error"
    error_id = result.sse[-1][1]
    assert error_id == len(result.deltas) + 1
    assert result.error is not None and result.error["kind"] in ANTHROPIC_ERROR_TYPES | {
        "upstream_error"
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UpstreamError("x"), "upstream_error"),  # the contract's own type for a failed provider
        (UpstreamError("x", kind="timeout_error"), "timeout_error"),
        (UpstreamError("x", kind="overloaded_error"), "overloaded_error"),
        (ServiceUnavailable(), "overloaded_error"),
        (NotFound("gone"), "not_found_error"),
        (BadUserInput(), "invalid_request_error"),
        (Conflict(), "invalid_request_error"),
        (QuotaExceeded(reset_at=datetime.now(UTC), retry_after=1), "rate_limit_error"),
        (AppError(), "api_error"),
    ],
)
def test_error_events_use_anthropics_types_where_one_fits(error: AppError, expected: str) -> None:
    assert error_type(error) == expected
    assert expected in ANTHROPIC_ERROR_TYPES | {"upstream_error"}


async def test_the_keepalive_is_a_lone_comment_line_never_an_empty_event(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=["late"], first_token_delay=KEEPALIVE * 5))
    body = b""
    url = f"/api/v1/conversations/{conversation_id}/messages/stream"
    async with api.http.stream("POST", url, json={"content": "wait"}, headers=user.headers) as r:
        async for chunk in r.aiter_bytes():
            body += chunk

    assert body.count(b": ping\n") >= 2, body
    # Every blank line ends an event that has a data line: a blank line right after the
    # comment would make parsers that remember the last id dispatch an empty event.
    blocks = body.decode().split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        assert any(line.startswith("data: ") for line in lines), repr(block)
        assert lines[0].startswith("event: "), repr(block)
    assert json.loads(blocks[-2].split("data: ", 1)[1])["type"] == "message_stop"


# --- credentials ------------------------------------------------------------------------------


async def test_x_api_key_carries_the_credential_as_anthropics_clients_send_it(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    secret = (await api.gql(CREATE_KEY, {"name": "sdk"}, user=user))["createApiKey"]["secret"]
    for credential in (secret, user.token):
        me = await api.http.get("/api/v1/auth/me", headers={"x-api-key": credential})
        assert me.status_code == 200, me.text
        assert me.json()["id"] == user.id

    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=["by ", "key"]))
    url = f"/api/v1/conversations/{conversation_id}/messages/stream"
    async with api.http.stream(
        "POST", url, json={"content": "key"}, headers={"x-api-key": secret}
    ) as response:
        assert response.status_code == 200
        body = (await response.aread()).decode()
    assert "event: message_stop" in body

    wrong = await api.http.get("/api/v1/auth/me", headers={"x-api-key": "cvk_not-a-key"})
    assert wrong.status_code == 401


async def test_authorization_wins_over_x_api_key(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    me = await api.http.get("/api/v1/auth/me", headers={**alice.headers, "x-api-key": bob.token})
    assert me.json()["id"] == alice.id


@pytest.mark.parametrize("value", ["{token}", "Token {token}", "Bearer"])
async def test_an_authorization_header_without_bearer_says_what_is_wrong(
    api: Api, fake_groq: FakeGroq, value: str
) -> None:
    user = await api.register()
    header = {"Authorization": value.format(token=user.token)}
    conversation_id = (await api.create_conversation(user))["id"]
    requests_before = len(fake_groq.requests)

    for response in (
        await api.http.get("/api/v1/auth/me", headers=header),
        await api.http.post(
            f"/api/v1/conversations/{conversation_id}/messages/stream",
            json={"content": "not sent"},
            headers=header,
        ),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["type"] == "authentication_error"
        assert "'Bearer <token>'" in error["message"], error
        assert user.token not in response.text
    assert len(fake_groq.requests) == requests_before
    assert await api.messages(user, conversation_id) == []
