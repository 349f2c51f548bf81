"""The streamMessage subscription over every transport Strawberry offers, and its auth rules."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

import jwt

from app.graphql.executor import COUNTS
from tests.conftest import TEST_JWT_SECRET
from tests.support.api import Api, User
from tests.support.streams import SUBSCRIPTION, GraphQLWebSocketTransport, transports, wait_until

EVENT_KINDS = ["MESSAGE_START", "CONTENT_BLOCK_DELTA", "MESSAGE_DELTA", "MESSAGE_STOP"]


def _kinds(payloads: list[dict[str, Any]]) -> list[str]:
    kinds = [p["data"]["streamMessage"]["type"] for p in payloads]
    # Consecutive deltas collapse: the shape is start, delta+, delta-event, stop.
    return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]


async def _echo_conversation(api: Api, user: User) -> str:
    return str((await api.create_conversation(user, model="echo"))["id"])


async def test_http_multipart_subscription(api: Api) -> None:
    user = await api.register()
    conversation_id = await _echo_conversation(api, user)
    headers = {**user.headers, "Accept": 'multipart/mixed;subscriptionSpec="1.0",application/json'}
    body = {
        "query": SUBSCRIPTION,
        "variables": {"conversationId": conversation_id, "content": "hi"},
    }
    async with api.http.stream("POST", "/graphql", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/mixed")
        raw = (await response.aread()).decode()
    payloads = []
    for part in raw.split("--graphql"):
        _, _, content = part.partition("\r\n\r\n")
        content = content.strip()
        if content.startswith("{"):
            message = json.loads(content)
            if "payload" in message:
                payloads.append(message["payload"])
    assert _kinds(payloads) == EVENT_KINDS
    text = "".join(
        p["data"]["streamMessage"]["delta"]["text"]
        for p in payloads
        if p["data"]["streamMessage"]["type"] == "CONTENT_BLOCK_DELTA"
    )
    assert "hi" in text


async def test_graphql_over_sse_subscription(api: Api) -> None:
    user = await api.register()
    conversation_id = await _echo_conversation(api, user)
    headers = {**user.headers, "Accept": "text/event-stream"}
    body = {
        "query": SUBSCRIPTION,
        "variables": {"conversationId": conversation_id, "content": "yo"},
    }
    events: list[tuple[str, str]] = []
    async with api.http.stream("POST", "/graphql", json=body, headers=headers) as response:
        assert response.status_code == 200
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, line.removeprefix("data: ")))
    assert events[-1][0] == "complete"
    payloads = [json.loads(data) for name, data in events if name == "next"]
    assert _kinds(payloads) == EVENT_KINDS


async def test_http_subscription_needs_credentials(api: Api) -> None:
    user = await api.register()
    conversation_id = await _echo_conversation(api, user)
    body = {"query": SUBSCRIPTION, "variables": {"conversationId": conversation_id, "content": "x"}}
    response = await api.http.post("/graphql", json=body, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert '"UNAUTHENTICATED"' in response.text
    assert "MESSAGE_START" not in response.text


def _short_lived_token(user: User, seconds: int) -> str:
    now = int(time.time())
    claims = {
        "sub": user.id,
        "iat": now,
        "exp": now + seconds,
        "iss": "conversation-api",
        "aud": "conversation-api",
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")


async def _until_the_server_refuses(api: Api, token: str) -> None:
    """Poll (with a deadline) until the server itself finds `token` expired."""

    async def refused() -> bool:
        response = await api.http.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code == 401

    await wait_until(refused, timeout=10, interval=0.05)


async def test_each_subscription_rechecks_the_token_on_an_open_socket(api: Api) -> None:
    user = await api.register()
    conversation_id = await _echo_conversation(api, user)
    transport = GraphQLWebSocketTransport(api.ws_url, "graphql-transport-ws")
    # Minted to expire two seconds from now: valid for the first subscription, and then
    # expired, which the test waits for by asking the server, not by sleeping.
    token = _short_lived_token(user, seconds=2)
    variables = {"conversationId": conversation_id, "content": "again"}

    async def subscribe(ws: Any, op_id: str) -> list[dict[str, Any]]:
        await ws.send(
            json.dumps(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIPTION, "variables": variables},
                }
            )
        )
        messages = []
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "ping":
                continue
            messages.append(message)
            if message["type"] in ("complete", "error"):
                return messages

    async with transport.connect(token) as ws:
        first = await subscribe(ws, "1")
        assert first[-1]["type"] == "complete"
        assert not any(m.get("payload", {}).get("errors") for m in first)
        await _until_the_server_refuses(api, token)  # it expired; the socket stays open
        second = await subscribe(ws, "2")
        errors = [e for m in second for e in (m.get("payload") or {}).get("errors", [])]
        assert errors and errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    rows = await api.http.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers=user.headers
    )
    assert [m["content"] for m in rows.json()["data"] if m["role"] == "user"] == ["again"]


async def test_the_real_schemas_events_take_the_compiled_path(api: Api) -> None:
    """streamMessage's events, as the suite's clients select them, are built by the compiled
    executor, not graphql-core's per-event execution (which gives the same results, slower)."""
    user = await api.register()
    conversation_id = await _echo_conversation(api, user)
    before = dataclasses.replace(COUNTS)

    for name in ("graphql-transport-ws", "graphql-ws"):
        result = await transports(api.http, api.ws_url)[name].stream(user, conversation_id, name)
        assert result.error is None and result.types[-1] == "message_stop"
        assert COUNTS.generic == before.generic, name
        assert COUNTS.compiled - before.compiled == len(result.events), name
        before = dataclasses.replace(COUNTS)
