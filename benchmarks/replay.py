"""A server that costs nothing: it replays precomputed SSE responses and websocket frames.

    python -m benchmarks.replay --port 8300

It answers the same requests as `benchmarks.reference` (`POST /sse`, and `graphql-transport-ws`
on any websocket path) with byte-for-byte the same shapes, from precomputed bytes. Each event is
still its own write (its own send), as a real server's are, so the client sees the same small
reads it would see from a fast server; only when the client falls behind does the kernel hand it
several events per read. Pinned to the server core, it makes the load generator the bottleneck:
the events/s a client process then reads is the load generator's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from typing import cast

import orjson
import uvloop

from benchmarks.wire import (
    CHUNKED_END,
    GRAPHQL_TRANSPORT_WS,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    UNTIMED_TOKEN,
    Directive,
    FrameReader,
    chunked,
    http_head,
    ws_accept,
    ws_frame,
)

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_CACHE_LIMIT = 4096


def _count(content: object, limit: object) -> int:
    directive = Directive.parse(content) if isinstance(content, str) else None
    count = directive.tokens if directive else 50
    return min(count, limit) if isinstance(limit, int) else count


class Replay(asyncio.Protocol):
    sse_cache: dict[int, list[bytes]] = {}
    ws_cache: dict[tuple[str, int], list[bytes]] = {}

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.frames: FrameReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self.frames is not None:
            for opcode, payload in self.frames.feed(data):
                self._message(opcode, payload)
            return
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            _, headers = http_head(self.buffer[:end])
            if headers.get(b"upgrade", b"").lower() == b"websocket":
                self._upgrade(headers, self.buffer[end + 4 :])
                return
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = orjson.loads(self.buffer[end + 4 : end + 4 + length] or b"{}")
            self.buffer = self.buffer[end + 4 + length :]
            self._write_each(self._sse(_count(body.get("content"), body.get("max_tokens"))))

    def _upgrade(self, headers: dict[bytes, bytes], rest: bytes) -> None:
        accept = ws_accept(headers[b"sec-websocket-key"])
        self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: %b\r\nsec-websocket-protocol: %b\r\n\r\n"
            % (accept, GRAPHQL_TRANSPORT_WS.encode())
        )
        self.frames, self.buffer = FrameReader(), b""
        if rest:
            self.data_received(rest)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._write(ws_frame(payload, OP_PONG))
            return
        if opcode == OP_CLOSE:
            self._write(ws_frame(payload[:2], OP_CLOSE))
            if self.transport is not None:
                self.transport.close()
            return
        if opcode != OP_TEXT:
            return
        message = orjson.loads(payload)
        kind = message.get("type")
        if kind == "connection_init":
            self._write(ws_frame(b'{"type":"connection_ack"}'))
        elif kind == "ping":
            self._write(ws_frame(b'{"type":"pong"}'))
        elif kind == "subscribe":
            variables = message["payload"].get("variables") or {}
            count = _count(variables.get("content"), variables.get("maxTokens"))
            self._write_each(self._ws(str(message["id"]), count))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _write_each(self, parts: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            for part in parts:
                transport.write(part)

    @classmethod
    def _sse(cls, count: int) -> list[bytes]:
        body = cls.sse_cache.get(count)
        if body is None:
            delta = orjson.dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": UNTIMED_TOKEN},
                }
            )
            parts = [_SSE_HEAD, chunked(b'event: message_start\nid: 0\ndata: {"type":"x"}\n\n')]
            parts += [
                chunked(b"event: content_block_delta\nid: %d\ndata: %b\n\n" % (i, delta))
                for i in range(1, count + 1)
            ]
            parts.append(chunked(b'event: message_stop\nid: 0\ndata: {"type":"x"}\n\n'))
            parts.append(CHUNKED_END)
            body = cls.sse_cache[count] = parts
        return body

    @classmethod
    def _ws(cls, op: str, count: int) -> list[bytes]:
        frames = cls.ws_cache.get((op, count))
        if frames is None:
            if len(cls.ws_cache) > _CACHE_LIMIT:
                cls.ws_cache.clear()

            def next_frame(event: dict[str, object]) -> bytes:
                message = {"id": op, "type": "next", "payload": {"data": {"streamMessage": event}}}
                return ws_frame(orjson.dumps(message))

            delta = next_frame(
                {
                    "type": "CONTENT_BLOCK_DELTA",
                    "messageId": "bare",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": UNTIMED_TOKEN},
                }
            )
            stop = next_frame({"type": "MESSAGE_STOP", "messageId": "bare"})
            complete = ws_frame(orjson.dumps({"id": op, "type": "complete"}))
            frames = cls.ws_cache[(op, count)] = [delta] * count + [stop, complete]
        return frames


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Replay, host, port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
