"""The hardware reference: a bare Starlette SSE endpoint and a bare Starlette websocket endpoint.

    python -m benchmarks.reference --port 8200

Served by uvicorn exactly as `python -m app` serves the API (same HTTP and websocket
implementations, no compression, no server header, same frame size limit), pinned to the same
core, so the ratio "API / bare" isolates what the API does per token.

- `POST /sse` with the API's stream body (`{"content": "<directive>", "max_tokens": n}`): a
  `StreamingResponse` of `message_start`, one `content_block_delta` per token, `message_stop`,
  each event encoded with orjson like the SSE shim's.
- `/ws`, subprotocol `graphql-transport-ws`: `connection_init` -> `connection_ack`; each
  `subscribe` gets one `next` frame per token and a `complete`, shaped like `streamMessage`'s.

Nothing else happens per event: no database, no upstream, no GraphQL.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from benchmarks.wire import GRAPHQL_TRANSPORT_WS, UNTIMED_TOKEN, Directive

WS_MAX_SIZE = 256 * 1024  # the API's WS_MAX_MESSAGE_BYTES default


def _tokens(content: object, max_tokens: object) -> int:
    directive = Directive.parse(content) if isinstance(content, str) else None
    count = directive.tokens if directive else 50
    return min(count, max_tokens) if isinstance(max_tokens, int) else count


async def sse(request: Request) -> StreamingResponse:
    body = orjson.loads(await request.body())
    count = _tokens(body.get("content"), body.get("max_tokens"))

    async def events() -> AsyncIterator[bytes]:
        start = {"type": "message_start", "message": {"id": "bare", "role": "assistant"}}
        yield b"event: message_start\nid: 0\ndata: %b\n\n" % orjson.dumps(start)
        for index in range(1, count + 1):
            data = orjson.dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": UNTIMED_TOKEN},
                }
            )
            yield b"event: content_block_delta\nid: %d\ndata: %b\n\n" % (index, data)
        yield b'event: message_stop\nid: %d\ndata: {"type":"message_stop"}\n\n' % (count + 1)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def ws(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=GRAPHQL_TRANSPORT_WS)
    try:
        while True:
            message = orjson.loads(await websocket.receive_text())
            kind = message.get("type")
            if kind == "connection_init":
                await websocket.send_text('{"type":"connection_ack"}')
            elif kind == "ping":
                await websocket.send_text('{"type":"pong"}')
            elif kind == "subscribe":
                op = message["id"]
                variables = message["payload"].get("variables") or {}
                count = _tokens(variables.get("content"), variables.get("maxTokens"))
                for _ in range(count):
                    event = {
                        "type": "CONTENT_BLOCK_DELTA",
                        "messageId": "bare",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": UNTIMED_TOKEN},
                    }
                    frame = {
                        "id": op,
                        "type": "next",
                        "payload": {"data": {"streamMessage": event}},
                    }
                    await websocket.send_text(orjson.dumps(frame).decode())
                stop = {"type": "MESSAGE_STOP", "messageId": "bare"}
                frame = {"id": op, "type": "next", "payload": {"data": {"streamMessage": stop}}}
                await websocket.send_text(orjson.dumps(frame).decode())
                await websocket.send_text(orjson.dumps({"id": op, "type": "complete"}).decode())
    except WebSocketDisconnect:
        return


app = Starlette(routes=[Route("/sse", sse, methods=["POST"]), WebSocketRoute("/ws", ws)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # The same options as app/__main__.py.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        proxy_headers=False,
        server_header=False,
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
