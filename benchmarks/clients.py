"""The load generator's clients: raw asyncio protocols that count tokens without parsing events.

httpx and the `websockets` client cost tens of microseconds per event in Python; at the rates the
bare endpoints reach that would make the client the bottleneck. These protocols work in
`data_received` callbacks (no task switch per read) and look at bytes only:

- tokens are counted with `bytes.count(b"~")` over whole reads (SSE) or frames (websocket);
- SSE reads are processed up to their last newline, so a token, an `event:` line or the chunked
  terminator is never split; nothing is de-chunked (chunk-size lines cannot contain `~`);
- websocket frames carrying a token are never JSON-decoded; the few others (ack, start, stop,
  complete, errors, pings) are, with orjson;
- when lag is measured, the send times are read out of the tokens with one regex per read/frame.

One `Meter` per scenario aggregates what every connection saw; `StreamState` is one reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from benchmarks.wire import (
    ARRIVAL_TIME,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TOKEN_MARK,
    TOKEN_TIMES,
    FrameReader,
    http_head,
    ws_accept,
    ws_frame,
    ws_key,
)

_SSE_END = b"\r\n0\r\n\r\n"
_SSE_DELTA = b"event: content_block_delta"


class ClientError(Exception):
    """The connection cannot be used any more (closed, refused, protocol error)."""


@dataclass(slots=True, eq=False)
class StreamState:
    """One reply as the client saw it. Times are `time.time()`."""

    expected: int  # tokens the upstream sends for this reply
    sent_at: float = 0.0  # request (SSE) or subscribe frame (websocket) written
    first_at: float | None = None  # first token received
    arrival_us: int | None = None  # upstream's stamp: when it received the request
    first_send_us: int | None = None  # upstream's stamp: when it sent the first token
    tokens: int = 0
    frames: int = 0  # events / frames that carried tokens
    started: bool = False  # message_start seen
    stopped: bool = False  # message_stop seen
    error: str | None = None
    ended_at: float | None = None
    done: asyncio.Future[None] = field(default_factory=lambda: _future())
    start: asyncio.Future[None] = field(default_factory=lambda: _future())

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.finish()

    def finish(self) -> None:
        if self.ended_at is None:
            self.ended_at = time.time()
        for future in (self.start, self.done):
            if not future.done():
                future.set_result(None)

    def mark_started(self) -> None:
        self.started = True
        if not self.start.done():
            self.start.set_result(None)

    @property
    def ok(self) -> bool:
        return self.error is None and self.stopped and self.tokens == self.expected

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return self.error
        if not self.stopped:
            return "ended without message_stop"
        if self.tokens != self.expected:
            return "token count mismatch"
        return "ok"


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(slots=True, eq=False)
class Meter:
    """Everything every connection of one scenario received, and the measurement window."""

    epoch: float
    measure_lag: bool = False
    tokens: int = 0
    frames: int = 0
    streams_ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    window_open: bool = False
    window_start: float = float("inf")
    window_end: float = float("inf")
    lags_us: array[int] = field(default_factory=lambda: array("q"))
    ttft: list[tuple[float, float, float, float]] = field(default_factory=list)
    stream_ms: list[float] = field(default_factory=list)  # durations of ok streams in the window

    def received(self, state: StreamState, data: bytes, now: float, frames: int) -> None:
        count = data.count(TOKEN_MARK)
        if not count:
            return
        state.tokens += count
        state.frames += frames
        self.tokens += count
        self.frames += frames
        if state.first_at is None:
            state.first_at = now
            arrival = ARRIVAL_TIME.search(data)
            if arrival is not None:
                state.arrival_us = int(arrival.group(1), 16)
                first = TOKEN_TIMES.search(data, arrival.end())
                if first is not None:
                    state.first_send_us = int(first.group(1), 16)
        if self.measure_lag and self.window_open:
            now_us = int((now - self.epoch) * 1_000_000)
            self.lags_us.extend([now_us - int(t, 16) for t in TOKEN_TIMES.findall(data)])

    def settle(self, state: StreamState) -> str:
        """Account for a finished reply; returns its outcome ("ok" or why not)."""
        outcome = state.outcome
        if outcome != "ok":
            self.errors[outcome] += 1
            return outcome
        self.streams_ok += 1
        in_window = self.window_start <= state.sent_at < self.window_end
        if in_window and state.first_at is not None and state.ended_at is not None:
            self.stream_ms.append((state.ended_at - state.sent_at) * 1000)
            if state.arrival_us is not None and state.first_send_us is not None:
                received = state.first_at - state.sent_at
                upstream = (state.first_send_us - state.arrival_us) / 1e6
                before = self.epoch + state.arrival_us / 1e6 - state.sent_at
                after = state.first_at - (self.epoch + state.first_send_us / 1e6)
                # added, client-observed, before the upstream saw the request, after its token
                self.ttft.append(
                    (
                        (received - upstream) * 1000,
                        received * 1000,
                        before * 1000,
                        after * 1000,
                    )
                )
        return outcome


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SSEClient(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; one streamed reply at a time."""

    def __init__(self, meter: Meter, host: str, port: int) -> None:
        self.meter = meter
        self.host = host.encode()
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.usable = False
        self._state: StreamState | None = None
        self._phase = "idle"
        self._buffer = b""
        self._tail = b""
        self._error_length = 0
        self._status = 0

    @classmethod
    async def connect(cls, meter: Meter, host: str, port: int) -> SSEClient:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(meter, host, port), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        self.usable = True
        _nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._state is not None:
            self._state.fail("connection lost")
            self._state = None

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()

    async def stream(
        self, path: str, token: str | None, body: bytes, state: StreamState
    ) -> StreamState:
        if not self.usable or self.transport is None:
            raise ClientError("connection closed")
        auth = b"authorization: Bearer %b\r\n" % token.encode() if token else b""
        request = (
            b"POST %b HTTP/1.1\r\nhost: %b:%d\r\naccept: text/event-stream\r\n"
            b"content-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b"
            % (path.encode(), self.host, self.port, auth, len(body), body)
        )
        self._state, self._phase, self._buffer, self._tail = state, "head", b"", b""
        state.sent_at = time.time()
        self.transport.write(request)
        await state.done
        return state

    def data_received(self, data: bytes) -> None:
        now = time.time()
        state = self._state
        if state is None:
            return
        if self._phase == "body":
            self._body(state, data, now)
        elif self._phase == "head":
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status, headers = http_head(self._buffer[:end])
            rest, self._buffer = self._buffer[end + 4 :], b""
            if headers.get(b"connection", b"").lower() == b"close":
                self.usable = False
            self._status = status
            if status == 200 and headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                self._phase = "body"
                if rest:
                    self._body(state, rest, now)
                return
            self._phase = "error"
            self._error_length = int(headers.get(b"content-length", b"0"))
            self._error(state, rest)
        elif self._phase == "error":
            self._error(state, data)

    def _body(self, state: StreamState, data: bytes, now: float) -> None:
        buffer = self._buffer + data if self._buffer else data
        cut = buffer.rfind(b"\n") + 1
        if not cut:
            self._buffer = buffer
            return
        part, self._buffer = buffer[:cut], buffer[cut:]
        self.meter.received(state, part, now, part.count(_SSE_DELTA))
        if not state.started and b"event: message_start" in part:
            state.mark_started()
        if b"event: message_stop" in part or b"data: [DONE]" in part:  # the API's, Groq's end
            state.stopped = True
        if b"event: error" in part and state.error is None:
            line = part[part.find(b"event: error") :].split(b"\n", 3)[:3]
            state.error = "error event: " + b" ".join(line)[:200].decode(errors="replace")
        self._tail = (self._tail + part)[-len(_SSE_END) :]
        if self._tail == _SSE_END:
            self._phase, self._state = "idle", None
            state.finish()

    def _error(self, state: StreamState, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < self._error_length:
            return
        body = self._buffer[: self._error_length]
        self._buffer, self._phase, self._state = b"", "idle", None
        state.fail(f"HTTP {self._status}: {body[:200].decode(errors='replace')}")


class WSClient(asyncio.Protocol):
    """One websocket speaking graphql-transport-ws; one subscription at a time."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.transport: asyncio.Transport | None = None
        self.usable = False
        self.close_code: int | None = None
        self._frames = FrameReader()
        self._handshake: asyncio.Future[None] = _future()
        self._acked: asyncio.Future[None] | None = None  # made by init()
        self._head = b""
        self._key = b""
        self._state: StreamState | None = None
        self._ids = itertools.count(1)

    @classmethod
    async def connect(
        cls, meter: Meter, host: str, port: int, path: str, subprotocol: str
    ) -> WSClient:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(meter), host, port)
        protocol._key = ws_key()
        assert protocol.transport is not None
        protocol.transport.write(
            b"GET %b HTTP/1.1\r\nhost: %b:%d\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: %b\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-protocol: %b\r\n\r\n"
            % (path.encode(), host.encode(), port, protocol._key, subprotocol.encode())
        )
        await protocol._handshake
        return protocol

    async def init(self, payload: dict[str, Any]) -> None:
        self._acked = _future()
        self.send({"type": "connection_init", "payload": payload})
        await self._acked

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is None or not self.usable:
            raise ClientError("websocket closed")
        self.transport.write(ws_frame(orjson.dumps(message), mask=True))

    async def subscribe(
        self, query: str, variables: dict[str, Any], state: StreamState, *, until_done: bool = True
    ) -> str:
        """Start a subscription; wait for its end (or only for message_start)."""
        op = str(next(self._ids))
        self._state = state
        state.sent_at = time.time()
        self.send(
            {"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
        await (state.done if until_done else state.start)
        return op

    def complete(self, op: str) -> None:
        """Stop the subscription from the client side."""
        with contextlib.suppress(ClientError):
            self.send({"id": op, "type": "complete"})
        if self._state is not None:
            self._state.fail("cancelled by client")
            self._state = None

    def close(self) -> None:
        if self.transport is not None and self.usable:
            self.usable = False
            with contextlib.suppress(RuntimeError):
                self.transport.write(ws_frame(b"\x03\xe8", OP_CLOSE, mask=True))
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        _nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        reason = f"websocket closed ({self.close_code})" if self.close_code else "connection lost"
        for future in (self._handshake, self._acked):
            if future is not None and not future.done():
                future.set_exception(ClientError(reason))
        if self._state is not None:
            self._state.fail(reason)
            self._state = None

    def data_received(self, data: bytes) -> None:
        if not self._handshake.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status, headers = http_head(self._head[:end])
            data, self._head = self._head[end + 4 :], b""
            if status != 101 or headers.get(b"sec-websocket-accept") != ws_accept(self._key):
                self._handshake.set_exception(ClientError(f"websocket upgrade refused ({status})"))
                if self.transport is not None:
                    self.transport.close()
                return
            self.usable = True
            self._handshake.set_result(None)
            if not data:
                return
        now = time.time()
        for opcode, payload in self._frames.feed(data):
            if opcode == OP_TEXT:
                state = self._state
                if state is not None and TOKEN_MARK in payload:
                    self.meter.received(state, payload, now, 1)
                else:
                    self._control(orjson.loads(payload))
            elif opcode == OP_PING and self.transport is not None:
                self.transport.write(ws_frame(payload, OP_PONG, mask=True))
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self.close()

    def _control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        state = self._state
        if kind == "connection_ack":
            if self._acked is not None and not self._acked.done():
                self._acked.set_result(None)
        elif kind == "ping":
            self.send({"type": "pong"})
        elif state is None:
            return
        elif kind == "next":
            payload = message.get("payload") or {}
            if payload.get("errors"):
                state.error = "graphql error: " + _error_code(payload["errors"])
                return
            event = (payload.get("data") or {}).get("streamMessage") or {}
            kind = event.get("type")
            if kind == "MESSAGE_START":
                state.mark_started()
            elif kind == "MESSAGE_STOP":
                state.stopped = True
        elif kind == "error":
            state.fail("graphql error: " + _error_code(message.get("payload") or []))
            self._state = None
        elif kind == "complete":
            self._state = None
            state.finish()


def _error_code(errors: Any) -> str:
    first = errors[0] if isinstance(errors, list) and errors else {}
    code = ((first.get("extensions") or {}).get("code")) if isinstance(first, dict) else None
    message = first.get("message") if isinstance(first, dict) else None
    return str(code or message or "unknown")[:120]
