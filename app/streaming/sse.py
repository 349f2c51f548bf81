"""The SSE shim: renders a reply's events as Server-Sent Events, exactly as the contract shows.

Each event is encoded once (orjson) into `event:`/`id:`/`data:` lines. While the model is silent a
`: ping` comment goes out every STREAM_KEEPALIVE_SECONDS. A client that disconnects is noticed at
once (the response listens for `http.disconnect`), which cancels the reply and so the upstream
request. A failure after the stream started is a final `error` event.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.errors import AppError, UpstreamError
from app.streaming.events import (
    ContentBlockDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StreamEvent,
)
from app.streaming.service import Reply

logger = structlog.get_logger(__name__)

PING = b": ping\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def event_payload(event: StreamEvent) -> tuple[bytes, dict[str, Any]]:
    """The SSE event name and JSON object for one pipeline event."""
    if isinstance(event, ContentBlockDelta):
        return b"content_block_delta", {
            "type": "content_block_delta",
            "index": event.index,
            "delta": {"type": "text_delta", "text": event.text},
        }
    if isinstance(event, MessageStart):
        message = event.message
        return b"message_start", {
            "type": "message_start",
            "message": {
                "id": str(message.id),
                "type": "message",
                "role": "assistant",
                "model": message.model,
                "conversation_id": str(message.conversation_id),
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": event.input_tokens, "output_tokens": 0},
            },
        }
    if isinstance(event, MessageDelta):
        return b"message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence},
            "usage": {"output_tokens": event.output_tokens},
            "latency_ms": event.latency_ms,
        }
    assert isinstance(event, MessageStop)
    return b"message_stop", {"type": "message_stop"}


def frame(name: bytes, event_id: int, data: dict[str, Any]) -> bytes:
    return b"event: %b\nid: %d\ndata: %b\n\n" % (name, event_id, orjson.dumps(data))


def error_frame(error: AppError, event_id: int) -> bytes:
    kind = error.kind if isinstance(error, UpstreamError) else error.type
    return frame(
        b"error", event_id, {"type": "error", "error": {"type": kind, "message": error.message}}
    )


def _chunk(body: bytes) -> Message:
    return {"type": "http.response.body", "body": body, "more_body": True}


class SSEReplyResponse(Response):
    """An ASGI response that streams one reply; it owns the reply and always closes it."""

    media_type = "text/event-stream"

    def __init__(self, reply: Reply, *, keepalive_seconds: float) -> None:
        super().__init__(status_code=200)
        self._reply = reply
        self._keepalive = keepalive_seconds
        self._last_write = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._last_write = asyncio.get_running_loop().time()
        streamer = asyncio.create_task(self._stream(send), name="sse-stream")
        watcher = asyncio.create_task(self._client_gone(receive), name="sse-disconnect")
        pinger = asyncio.create_task(self._pings(send), name="sse-keepalive")
        try:
            await asyncio.wait((streamer, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streamer, watcher, pinger):
                task.cancel()
            for task in (streamer, watcher, pinger):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
            await self._reply.close()

    async def _stream(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        event_id = 0
        try:
            async for event in self._reply.events():
                name, data = event_payload(event)
                await send(_chunk(frame(name, event_id, data)))
                self._last_write = loop.time()
                event_id += 1
        except AppError as error:
            await send(_chunk(error_frame(error, event_id)))
        except Exception as error:
            logger.error("sse_stream_failed", exc_info=error)
            await send(_chunk(error_frame(AppError(), event_id)))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _client_gone(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _pings(self, send: Send) -> None:
        # STREAM_KEEPALIVE_SECONDS is the longest silence a client may see; pinging a fifth
        # early absorbs timer and scheduling delays.
        loop = asyncio.get_running_loop()
        period = self._keepalive * 0.8
        while True:
            idle = loop.time() - self._last_write
            if idle >= period:
                await send(_chunk(PING))
                self._last_write = loop.time()
                idle = 0.0
            await asyncio.sleep(period - idle)
