"""An HTTP/1.1 transport for httpx that hands over a streamed body one *read* at a time.

Why not httpx's own transport: it hands a chunked body over one HTTP chunk at a time, through
five layers of async generators (h11, httpcore, httpx), which costs ~12 µs per chunk even when a
single socket read brought hundreds of them. A model streaming 500 tokens a second to a few
hundred clients is 100,000 chunks a second. This transport keeps the groq SDK (request building,
auth, status errors, retries live above it) and replaces only the wire: an `asyncio.Protocol`
buffers whatever arrives, and each iteration of the body returns *everything* buffered, de-chunked,
in one piece (~3 µs per chunk). Under load that is natural coalescing: the busier the server, the
more a single wake-up carries.

Scope, deliberately small: HTTP/1.1 only, keep-alive pooling with a connection limit, TLS through
httpx's own SSL context (the same certificate handling as httpx), Content-Length, chunked and
close-delimited bodies. No proxies: deployments behind an HTTP proxy set LLM_HTTP_CLIENT=httpx.
Failures are httpx's exceptions (ConnectError, ConnectTimeout, ReadTimeout, PoolTimeout,
RemoteProtocolError, ReadError), so everything above behaves as with httpx's transport.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Literal, cast

import httpx

_MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_SIZE_LINE = 1024
# Past this much unread body, stop reading the socket until the consumer catches up.
_HIGH_WATER = 4 * 1024 * 1024
_LOW_WATER = 1024 * 1024
_KEEPALIVE_EXPIRY = 15.0

BodyMode = Literal["chunked", "length", "close", "none"]


class _Connection(asyncio.Protocol):
    """One socket: bytes arrive into `buffer`; a reader waits with `wait()`."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._loop = asyncio.get_running_loop()
        # Read timeouts without a timer per wait: one watchdog per connection, re-armed only when
        # it fires, checks the time since the last byte (or since the reader started waiting).
        self._last_activity = 0.0
        self._limit: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._last_activity = self._loop.time()
        if len(self.buffer) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    # --- for readers ---

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, limit: float | None) -> None:
        """Until more bytes arrive or the peer closes; ReadTimeout after `limit` seconds."""
        if self.closed:
            return
        waiter = self._waiter = self._loop.create_future()
        self._last_activity = self._loop.time()
        self._limit = limit
        if limit is not None and self._watchdog is None:
            self._watchdog = self._loop.call_at(self._last_activity + limit, self._check_deadline)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_deadline(self) -> None:
        self._watchdog = None
        waiter, limit = self._waiter, self._limit
        if waiter is None or waiter.done() or limit is None:
            return  # nobody is waiting now: the next wait() arms the watchdog again
        deadline = self._last_activity + limit
        if self._loop.time() >= deadline:
            waiter.set_exception(httpx.ReadTimeout("no data from the server in time"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)

    def consumed(self) -> None:
        if self._paused and len(self.buffer) < _LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise httpx.WriteError("the connection is closed")
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            self.transport.abort()  # an unfinished response: no draining, no graceful goodbye


class _Body(httpx.AsyncByteStream):
    """A response body, de-chunked, one piece per iteration: everything buffered at that time."""

    def __init__(
        self,
        pool: BufferedTransport,
        connection: _Connection,
        mode: BodyMode,
        length: int,
        read_timeout: float | None,
        keep_alive: bool,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._mode = mode
        self._remaining = length  # "length": bytes still due; "chunked": of the current chunk
        self._chunk_state: Literal["size", "data", "crlf", "trailer"] = "size"
        self._read_timeout = read_timeout
        self._keep_alive = keep_alive
        self.complete = mode == "none" or (mode == "length" and length == 0)
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while not self.complete:
            piece = self._take()
            connection.consumed()
            if piece:
                yield piece
                continue
            if self.complete:
                break
            if connection.closed:
                if self._mode == "close" and connection.error is None:
                    self.complete = True
                    break
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")
            await connection.wait(self._read_timeout)

    def _take(self) -> bytes:
        buffer = self._connection.buffer
        if not buffer:
            return b""
        if self._mode == "close":
            data = bytes(buffer)
            buffer.clear()
            return data
        if self._mode == "length":
            data = bytes(buffer[: self._remaining])
            del buffer[: len(data)]
            self._remaining -= len(data)
            self.complete = self._remaining == 0
            return data
        return self._take_chunked(buffer)

    def _take_chunked(self, buffer: bytearray) -> bytes:
        pieces: list[bytes] = []
        position = 0
        end = len(buffer)
        while position < end:
            if self._chunk_state == "data":
                take = min(self._remaining, end - position)
                pieces.append(bytes(buffer[position : position + take]))
                position += take
                self._remaining -= take
                if self._remaining:
                    break
                self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                if end - position < 2:
                    break
                if buffer[position : position + 2] != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunked body")
                position += 2
                self._chunk_state = "size"
            else:  # "size" or "trailer": a CRLF-terminated line
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    if end - position > _MAX_CHUNK_SIZE_LINE:
                        raise httpx.RemoteProtocolError("oversized chunk header")
                    break
                line = bytes(buffer[position:line_end])
                position = line_end + 2
                if self._chunk_state == "trailer":
                    if not line:  # the empty line after the trailers ends the body
                        self.complete = True
                        break
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as error:
                    raise httpx.RemoteProtocolError("malformed chunk size") from error
                if size < 0:
                    raise httpx.RemoteProtocolError("malformed chunk size")
                if size == 0:
                    self._chunk_state = "trailer"
                else:
                    self._remaining = size
                    self._chunk_state = "data"
        del buffer[:position]
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        reusable = self.complete and self._keep_alive and not self._connection.buffer
        self._pool.release(self._connection, reusable=reusable)


class BufferedTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._limit = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}")
        timeouts = request.extensions.get("timeout", {})
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = await request.aread()
        connection = await self._acquire(key, timeouts)
        try:
            connection.write(_request_head(request, len(body)) + body)
            status, reason, headers = await _read_head(connection, timeouts.get("read"))
            mode, length, keep_alive = _body_framing(request.method, status, headers)
        except BaseException:
            self.release(connection, reusable=False)
            raise
        stream = _Body(self, connection, mode, length, timeouts.get("read"), keep_alive)
        if stream.complete:
            await stream.aclose()
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def _acquire(
        self, key: tuple[str, str, int], timeouts: dict[str, float | None]
    ) -> _Connection:
        now = time.monotonic()
        idle = self._idle.get(key, [])
        while idle:
            connection = idle.pop()
            expired = now - connection.idle_since > _KEEPALIVE_EXPIRY
            if connection.closed or connection.buffer or expired:
                self._forget(connection)
                continue
            return connection
        if self._limit.locked():
            self._evict_idle()  # an idle connection to another host should not block this one
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._limit.acquire()
        except TimeoutError as error:
            raise httpx.PoolTimeout("every connection is busy") from error
        try:
            return await self._connect(key, timeouts.get("connect"))
        except BaseException:
            self._limit.release()
            raise

    async def _connect(self, key: tuple[str, str, int], limit: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                _, connection = await loop.create_connection(
                    lambda: _Connection(key),
                    host,
                    port,
                    ssl=self._ssl_context() if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                )
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from error
        except OSError as error:
            raise httpx.ConnectError(f"could not connect to {host}:{port}: {error}") from error
        self._open.add(connection)
        return connection

    def _evict_idle(self) -> None:
        oldest: _Connection | None = None
        for connections in self._idle.values():
            for connection in connections:
                if oldest is None or connection.idle_since < oldest.idle_since:
                    oldest = connection
        if oldest is not None:
            self._idle[oldest.key].remove(oldest)
            self._forget(oldest)

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        if reusable and not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.key, []).append(connection)
            return
        connection.close()
        self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            connection.close()
            self._limit.release()

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._forget(connection)
        self._idle.clear()


def _request_head(request: httpx.Request, body_length: int) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered in (b"transfer-encoding", b"content-length", b"connection"):
            continue  # the body is sent whole, with its length, on a kept-alive connection
        lines.append(name + b": " + value)
    if body_length or request.method not in ("GET", "HEAD"):
        lines.append(b"Content-Length: " + str(body_length).encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_head(
    connection: _Connection, limit: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    while True:
        end = connection.buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(connection.buffer) > _MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("response headers too large")
            if connection.closed:
                raise httpx.RemoteProtocolError("the server closed the connection unanswered")
            await connection.wait(limit)
            end = connection.buffer.find(b"\r\n\r\n")
        head = bytes(connection.buffer[:end])
        del connection.buffer[: end + 4]
        status_line, *header_lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError("malformed status line")
        try:
            status = int(parts[1])
        except ValueError as error:
            raise httpx.RemoteProtocolError("malformed status code") from error
        if 100 <= status < 200 and status != 101:
            continue  # interim response (100 Continue): the real one follows
        headers = []
        for line in header_lines:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise httpx.RemoteProtocolError("malformed header line")
            headers.append((name, value.strip()))
        return status, parts[2] if len(parts) > 2 else b"", headers


def _body_framing(
    method: str, status: int, headers: list[tuple[bytes, bytes]]
) -> tuple[BodyMode, int, bool]:
    values: dict[bytes, bytes] = {}
    for name, value in headers:
        values[name.lower()] = value
    keep_alive = values.get(b"connection", b"").lower() != b"close"
    if method == "HEAD" or status in (204, 304):
        return "none", 0, keep_alive
    if b"chunked" in values.get(b"transfer-encoding", b"").lower():
        return "chunked", 0, keep_alive
    if b"content-length" in values:
        try:
            length = int(values[b"content-length"])
        except ValueError as error:
            raise httpx.RemoteProtocolError("malformed Content-Length") from error
        if length < 0:
            raise httpx.RemoteProtocolError("malformed Content-Length")
        return "length", length, keep_alive
    return "close", 0, False
