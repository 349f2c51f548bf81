"""Websocket defences, on both subprotocols: the connection_init deadline (4408), nothing before
the acknowledgement (4401), the Origin allowlist (CORS_ORIGINS), the per-connection operation
cap, and the frame size limit."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets

from tests.conftest import LiveServer
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api, User
from tests.support.streams import SUBSCRIPTION, wait_until

pytestmark = pytest.mark.usefixtures("server_survives")

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
INIT_TIMEOUT = 0.5
MAX_OPERATIONS = 2
ALLOWED = "https://app.example.test"


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {
        "ws_init_timeout_seconds": INIT_TIMEOUT,
        "ws_max_subscriptions": MAX_OPERATIONS,
        # Written as an operator might; browsers send it lower-case without the default port.
        "cors_origins": "https://App.Example.test:443/",
    }


def connect(server: LiveServer, protocol: str, **options: Any) -> Any:
    return websockets.connect(
        server.ws_url, subprotocols=[websockets.Subprotocol(protocol)], **options
    )


async def close_code(ws: Any, within: float) -> int | None:
    """The close code the server sends within `within` seconds (messages before it ignored)."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def init(ws: Any, token: str) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    while json.loads(await ws.recv())["type"] != "connection_ack":
        pass


def start_message(protocol: str, op_id: str, conversation_id: str) -> str:
    return json.dumps(
        {
            "id": op_id,
            "type": "subscribe" if protocol == "graphql-transport-ws" else "start",
            "payload": {
                "query": SUBSCRIPTION,
                "variables": {"conversationId": conversation_id, "content": "go on"},
            },
        }
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_connection_that_never_initialises_is_closed_4408(
    server: LiveServer, protocol: str
) -> None:
    async with connect(server, protocol) as ws:
        assert await close_code(ws, within=INIT_TIMEOUT + 3) == 4408


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_before_the_acknowledgement_is_closed_4401(
    server: LiveServer, protocol: str
) -> None:
    async with connect(server, protocol) as ws:
        await ws.send(start_message(protocol, "1", str(uuid.uuid4())))
        assert await close_code(ws, within=3) == 4401


async def test_only_listed_origins_may_open_a_socket(server: LiveServer, api: Api) -> None:
    user = await api.register()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(server, "graphql-transport-ws", origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    # A listed origin (as browsers write it), and clients that send none, are let in.
    for options in ({"origin": websockets.Origin(ALLOWED)}, {}):
        async with connect(server, "graphql-transport-ws", **options) as ws:
            await init(ws, user.token)


async def test_cors_answers_only_listed_origins_and_never_with_credentials(api: Api) -> None:
    def preflight(origin: str) -> Any:
        return api.http.options(
            "/api/v1/conversations",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    allowed = await preflight(ALLOWED)
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in (await preflight("https://evil.example")).headers


async def messages_until_finished(api: Api, user: User, *conversation_ids: str) -> None:
    async def finished() -> bool:
        for conversation_id in conversation_ids:
            response = await api.http.get(
                f"/api/v1/conversations/{conversation_id}/messages", headers=user.headers
            )
            rows = response.json()["data"]
            if any(row["finish_reason"] is None for row in rows if row["role"] == "assistant"):
                return False
        return True

    await wait_until(finished, timeout=10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_past_the_cap_is_refused_and_the_others_go_on(
    server: LiveServer, api: Api, fake_groq: FakeGroq, protocol: str
) -> None:
    user = await api.register()
    conversations = [str((await api.create_conversation(user))["id"]) for _ in range(3)]
    fake_groq.enqueue(*[Scenario(n_tokens=400, token_interval=0.05)] * MAX_OPERATIONS)
    async with connect(server, protocol) as ws:
        await init(ws, user.token)
        events: dict[str, int] = {"op0": 0, "op1": 0}
        for n, conversation_id in enumerate(conversations[:MAX_OPERATIONS]):
            await ws.send(start_message(protocol, f"op{n}", conversation_id))
        while min(events.values()) < 2:  # both are streaming: message_start and a delta
            message = json.loads(await ws.recv())
            if message["type"] in ("next", "data"):
                events[message["id"]] += 1
        calls = len(fake_groq.requests)

        await ws.send(start_message(protocol, "op2", conversations[2]))
        seen_after: set[str] = set()
        refusal = None
        while refusal is None or seen_after != {"op0", "op1"}:
            message = json.loads(await ws.recv())
            if message.get("id") == "op2":
                refusal = message
            elif message["type"] in ("next", "data"):
                seen_after.add(message["id"])  # the first two keep streaming
        assert refusal["type"] == "error", refusal
        errors = (
            refusal["payload"] if isinstance(refusal["payload"], list) else [refusal["payload"]]
        )
        assert errors[0]["extensions"]["code"] == "RATE_LIMITED", errors
        assert errors[0]["extensions"]["retryAfter"] >= 1
        assert len(fake_groq.requests) == calls
    # Closing the socket cancels both replies.
    await messages_until_finished(api, user, *conversations[:MAX_OPERATIONS])


async def test_an_oversized_frame_closes_the_connection(server: LiveServer, api: Api) -> None:
    user = await api.register()
    async with connect(server, "graphql-transport-ws") as ws:
        await init(ws, user.token)
        too_big = "x" * (server.settings.ws_max_message_bytes + 1)
        await ws.send(start_message("graphql-transport-ws", "big", too_big))
        assert await close_code(ws, within=3) == 1009  # "message too big"
