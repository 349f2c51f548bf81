"""The SSE shim: renders a reply's events as Server-Sent Events, exactly as the contract shows.

Each event is encoded once (orjson) into `event:`/`id:`/`data:` lines; `id` is the event's number
in the reply (0 for `message_start`). Anthropic's block events go around the text, without an `id`
(they are not events of the reply, so the numbering every transport shares is unchanged):
`content_block_start` before the first delta (or before `message_delta` when there is no text),
`content_block_stop` before `message_delta`. With them Anthropic's own SDKs accumulate the stream.

While the model is silent a `: ping` comment line goes out every STREAM_KEEPALIVE_SECONDS, with no
blank line after it: a comment followed by a blank line is dispatched as an empty event by
parsers that remember a last event id (httpx-sse, the anthropic SDK's raw events), while a lone
comment line is skipped by every parser and still keeps proxies and clients from timing out.

A client that disconnects is noticed at once (the response listens for `http.disconnect`),
which cancels the reply and so the upstream request. A failure after the stream started is a
final `error` event whose type is one of Anthropic's where one fits.
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

PING = b": ping\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

# Anthropic's error types by the HTTP status they stand for
# (https://docs.anthropic.com/en/api/errors); an error of ours whose own type is not one of them
# is reported in the stream as the one of its status.
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


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
                "stop_sequence": None,
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


def frame(name: bytes, event_id: int | None, data: dict[str, Any]) -> bytes:
    if event_id is None:
        return b"event: %b\ndata: %b\n\n" % (name, orjson.dumps(data))
    return b"event: %b\nid: %d\ndata: %b\n\n" % (name, event_id, orjson.dumps(data))


def error_type(error: AppError) -> str:
    """The `error.type` of a stream's `error` event: the contract's upstream kinds, else
    Anthropic's type for the error."""
    if isinstance(error, UpstreamError):
        return error.kind
    if error.type in _ANTHROPIC_ERROR_TYPES.values():
        return error.type
    return _ANTHROPIC_ERROR_TYPES.get(error.status, "api_error")


_EMPTY_TEXT = {"type": "text", "text": ""}


def _block_start(index: int) -> bytes:
    data = {"type": "content_block_start", "index": index, "content_block": _EMPTY_TEXT}
    return frame(b"content_block_start", None, data)


def _block_stop(index: int) -> bytes:
    return frame(b"content_block_stop", None, {"type": "content_block_stop", "index": index})


class SSERenderer:
    """One reply's events as SSE bytes, numbered, with the block events put in around the text."""

    def __init__(self) -> None:
        self.next_id = 0
        self._open_block: int | None = None

    def render(self, event: StreamEvent) -> bytes:
        name, data = event_payload(event)
        body = frame(name, self.next_id, data)
        self.next_id += 1
        if isinstance(event, ContentBlockDelta) and self._open_block is None:
            self._open_block = event.index
            return _block_start(event.index) + body
        if isinstance(event, MessageDelta):
            opened = b""
            if self._open_block is None:  # no text at all: still one (empty) text block
                self._open_block = 0
                opened = _block_start(0)
            return opened + _block_stop(self._open_block) + body
        return body

    def error(self, error: AppError) -> bytes:
        data = {"type": "error", "error": {"type": error_type(error), "message": error.message}}
        body = frame(b"error", self.next_id, data)
        self.next_id += 1
        return body


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
        renderer = SSERenderer()
        try:
            async for event in self._reply.events():
                await send(_chunk(renderer.render(event)))
                self._last_write = loop.time()
        except AppError as error:
            await send(_chunk(renderer.error(error)))
        except Exception as error:
            logger.error("sse_stream_failed", exc_info=error)
            await send(_chunk(renderer.error(AppError())))
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
