"""Streaming a reply the way clients do, over each transport, with the events normalised.

Every transport returns the same `StreamResult`: the events in the contract's vocabulary
(`message_start`, `content_block_delta`, `message_delta`, `message_stop`, and `error`), so one
parametrised suite asserts one behaviour for the SSE shim and both websocket subprotocols.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import websockets

from tests.support.api import User

SUBSCRIPTION = """
subscription Stream($conversationId: ID!, $content: String!, $maxTokens: Int, $temperature: Float) {
  streamMessage(conversationId: $conversationId, content: $content,
                maxTokens: $maxTokens, temperature: $temperature) {
    __typename type messageId
    ... on MessageStartEvent {
      message { id role model conversationId finishReason content }
      usage { inputTokens outputTokens }
    }
    ... on ContentBlockDeltaEvent { index delta { type text } }
    ... on MessageDeltaEvent {
      delta { stopReason stopSequence } usage { inputTokens outputTokens } latencyMs
    }
    ... on MessageStopEvent {
      message { id content finishReason tokenCount model latencyMs metadata role }
    }
  }
}
"""


@dataclass
class StreamResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    # Before the stream: (status or GraphQL code). After it started: the error event's type/code.
    error: dict[str, Any] | None = None
    raw: list[str] = field(default_factory=list)  # SSE only: the raw lines, comments included
    # SSE only: every event as sent, (name, id or None, data), Anthropic's block events included
    sse: list[tuple[str, int | None, dict[str, Any]]] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    @property
    def deltas(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "content_block_delta"]

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def first(self, kind: str) -> dict[str, Any]:
        return next(event for event in self.events if event["type"] == kind)


class Transport(Protocol):
    name: str

    async def stream(
        self,
        user: User,
        conversation_id: str,
        content: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        disconnect_after: int | None = None,
        on_event: Any = None,
    ) -> StreamResult: ...


# --- SSE ---------------------------------------------------------------------------------------


def _normal_sse(name: str, data: dict[str, Any]) -> dict[str, Any]:
    assert data["type"] == name, (name, data)
    if name == "message_start":
        message = data["message"]
        return {
            "type": name,
            "message_id": message["id"],
            "model": message["model"],
            "role": message["role"],
            "input_tokens": message["usage"]["input_tokens"],
        }
    if name == "content_block_delta":
        assert data["index"] == 0 and data["delta"]["type"] == "text_delta"
        return {"type": name, "text": data["delta"]["text"]}
    if name == "message_delta":
        return {
            "type": name,
            "stop_reason": data["delta"]["stop_reason"],
            "output_tokens": data["usage"]["output_tokens"],
            "latency_ms": data["latency_ms"],
        }
    if name == "error":
        return {"type": name, "kind": data["error"]["type"], "message": data["error"]["message"]}
    return {"type": name}


class SSETransport:
    name = "sse"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def stream(
        self,
        user: User,
        conversation_id: str,
        content: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        disconnect_after: int | None = None,
        on_event: Any = None,
    ) -> StreamResult:
        body: dict[str, Any] = {"content": content}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        result = StreamResult()
        url = f"/api/v1/conversations/{conversation_id}/messages/stream"
        async with self.http.stream("POST", url, json=body, headers=user.headers) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = {
                    "status": response.status_code,
                    "body": response.json(),
                    "headers": dict(response.headers),
                }
                return result
            result.error = None
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            deltas = 0
            async for name, event_id, data in _sse_events(response, result.raw):
                result.sse.append((name, event_id, data))
                if name in BLOCK_EVENTS:
                    assert event_id is None, "block events carry no id"
                    continue  # Anthropic's framing around the text; not events of the reply
                assert event_id is not None
                event = _normal_sse(name, data)
                event["id"] = event_id
                result.events.append(event)
                if on_event is not None:
                    await on_event(event)
                if name == "error":
                    result.error = event
                if name == "content_block_delta":
                    deltas += 1
                    if disconnect_after is not None and deltas >= disconnect_after:
                        break  # leaving the block closes the connection mid-stream
        return result


BLOCK_EVENTS = ("content_block_start", "content_block_stop")


async def _sse_events(
    response: httpx.Response, raw: list[str]
) -> AsyncIterator[tuple[str, int | None, dict[str, Any]]]:
    """Each event as (name, its own `id` line or None, data). Unlike a browser this does not
    carry the last id over to events without one, so the tests see what was sent."""
    name, event_id, data = None, None, None
    async for line in response.aiter_lines():
        raw.append(line)
        if line.startswith(":"):
            continue
        if not line:
            if name is not None:
                assert data is not None
                yield name, event_id, data
            name, event_id, data = None, None, None
            continue
        key, _, value = line.partition(": ")
        if key == "event":
            name = value
        elif key == "id":
            event_id = int(value)
        elif key == "data":
            assert data is None, "one data line per event"
            data = json.loads(value)


# --- GraphQL over websockets -------------------------------------------------------------------


def _normal_graphql(payload: dict[str, Any]) -> dict[str, Any]:
    kind = payload["type"].lower()
    expected = {
        "message_start": "MessageStartEvent",
        "content_block_delta": "ContentBlockDeltaEvent",
        "message_delta": "MessageDeltaEvent",
        "message_stop": "MessageStopEvent",
    }[kind]
    assert payload["__typename"] == expected
    if kind == "message_start":
        message = payload["message"]
        assert message["id"] == payload["messageId"]
        assert message["finishReason"] is None
        return {
            "type": kind,
            "message_id": message["id"],
            "model": message["model"],
            "role": message["role"].lower(),
            "input_tokens": payload["usage"]["inputTokens"],
        }
    if kind == "content_block_delta":
        assert payload["index"] == 0 and payload["delta"]["type"] == "text_delta"
        return {"type": kind, "text": payload["delta"]["text"]}
    if kind == "message_delta":
        return {
            "type": kind,
            "stop_reason": payload["delta"]["stopReason"],
            "output_tokens": payload["usage"]["outputTokens"],
            "latency_ms": payload["latencyMs"],
        }
    return {"type": kind, "message": payload["message"]}


class GraphQLWebSocketTransport:
    def __init__(self, ws_url: str, protocol: str) -> None:
        self.ws_url = ws_url
        self.protocol = protocol
        self.name = protocol

    @asynccontextmanager
    async def connect(self, token: str) -> AsyncIterator[websockets.ClientConnection]:
        async with websockets.connect(
            self.ws_url, subprotocols=[websockets.Subprotocol(self.protocol)]
        ) as ws:
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                )
            )
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "connection_ack":
                    break
                assert message["type"] in ("ka", "ping"), message
            yield ws

    async def stream(
        self,
        user: User,
        conversation_id: str,
        content: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        disconnect_after: int | None = None,
        on_event: Any = None,
        complete_instead_of_drop: bool = True,
    ) -> StreamResult:
        variables = {
            "conversationId": conversation_id,
            "content": content,
            "maxTokens": max_tokens,
            "temperature": temperature,
        }
        result = StreamResult()
        async with self.connect(user.token) as ws:
            op_id = uuid.uuid4().hex[:8]
            start = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
            await ws.send(
                json.dumps(
                    {
                        "id": op_id,
                        "type": start,
                        "payload": {"query": SUBSCRIPTION, "variables": variables},
                    }
                )
            )
            deltas = 0
            while True:
                message = json.loads(await ws.recv())
                kind = message["type"]
                if kind in ("ka", "ping", "pong"):
                    continue
                assert message.get("id") == op_id, message
                if kind in ("complete",):
                    break
                if kind == "error":
                    errors = message["payload"]
                    errors = errors if isinstance(errors, list) else [errors]
                    result.error = {"type": "error", "errors": errors, "code": _code(errors)}
                    break
                assert kind in ("next", "data"), message
                payload = message["payload"]
                if payload.get("errors"):
                    errors = payload["errors"]
                    result.error = {"type": "error", "errors": errors, "code": _code(errors)}
                    if result.events:  # mid-stream failure: recorded as an event, like SSE
                        result.events.append(result.error)
                    continue
                event = _normal_graphql(payload["data"]["streamMessage"])
                result.events.append(event)
                if on_event is not None:
                    await on_event(event)
                if kind_is_delta(event):
                    deltas += 1
                    if disconnect_after is not None and deltas >= disconnect_after:
                        if complete_instead_of_drop:
                            stop = "complete" if self.protocol == "graphql-transport-ws" else "stop"
                            await ws.send(json.dumps({"id": op_id, "type": stop}))
                        break  # leaving the block also closes the socket
        return result


def kind_is_delta(event: dict[str, Any]) -> bool:
    return bool(event["type"] == "content_block_delta")


def _code(errors: list[dict[str, Any]]) -> str | None:
    extensions = errors[0].get("extensions") or {}
    code = extensions.get("code")
    return str(code) if code is not None else None


def transports(http: httpx.AsyncClient, ws_url: str) -> dict[str, Transport]:
    return {
        "sse": SSETransport(http),
        "graphql-transport-ws": GraphQLWebSocketTransport(ws_url, "graphql-transport-ws"),
        "graphql-ws": GraphQLWebSocketTransport(ws_url, "graphql-ws"),
    }


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
