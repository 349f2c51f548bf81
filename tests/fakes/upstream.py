"""A loopback model provider: a real HTTP/1.1 server for the providers' streaming wire formats.

Tests point a real SDK (groq, openai, anthropic) at a subclass of `FakeUpstream` and script each
response with a `Scenario`: the tokens and their pace, the finish reason, the usage, HTTP errors,
and faults mid-stream (a dropped connection, an error event, a hang, invalid JSON). It is written
on asyncio streams rather than a web framework so that the bytes on the wire are exactly the ones
chosen here, broken ones included. A subclass says how its provider frames a reply (`Encoder`),
answers errors and authenticates; everything else (recording, pacing, faults, disconnects) is
here, so every provider's fake fails the same ways:

    async with FakeOpenAI(api_key="test-key") as fake:
        fake.enqueue(Scenario(tokens=["Hel", "lo"]))        # FIFO; then `default_scenario`
        ...
        assert fake.requests[0].body["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl as ssl_module
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import orjson

FinishReason = Literal["stop", "length"]
# Where usage goes: Groq's `x_groq`, the wire format's own place, or nowhere.
UsagePlacement = Literal["x_groq", "usage", "none"]
HttpChunking = Literal["per_event", "per_write"]

_READ_SIZE = 64 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024
_WORDS = ("The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog.")
_END_OF_BODY = b"0\r\n\r\n"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def deterministic_tokens(n: int) -> list[str]:
    """`n` word-like tokens, the same for the same `n`: "The", " quick", " brown", ..."""
    return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(n)]


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the fake answers one request.

    Fault points (`drop_after`, `error_chunk_after`, `hang_after`, `invalid_json_after`) count
    content tokens already sent: 0 means right after the response headers.
    """

    tokens: Sequence[str] | None = None
    n_tokens: int = 8  # used when `tokens` is None (see `deterministic_tokens`)
    first_token_delay: float = 0.0  # after the headers; the role chunk goes with the first token
    token_interval: float = 0.0  # 0: every chunk in one write
    finish_reason: FinishReason | None = "stop"  # None: no final chunk (nor usage) at all
    # Cut the reply at the request's length limit (finish "length"), as providers do.
    honor_max_tokens: bool = True
    usage_placement: UsagePlacement = "x_groq"
    prompt_tokens: int | None = None  # default: a rough count of the request's messages
    completion_tokens: int | None = None  # default: the number of content tokens sent
    # HTTP errors: any status but 200 answers with the provider's JSON error body.
    status: int = 200
    retry_after: str | None = None  # `retry-after` header value (seconds)
    retry_after_ms: str | None = None  # `retry-after-ms` header value
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    # The request-id header; without it only the stream's ids name the request.
    send_request_id_header: bool = True
    send_done: bool = True  # end with the end marker (`data: [DONE]`, `message_stop`)
    # HTTP framing: one chunk per SSE event (providers flush every event), or one per write (a
    # server that buffers: with no pacing, the whole reply in one chunk).
    http_chunks: HttpChunking = "per_event"
    # Messy but valid framing: each chunk split in two mid-event, comment lines between events.
    fragment_events: bool = False
    comment_lines: bool = False
    # Faults.
    drop_after: int | None = None  # abort the TCP connection mid-body
    error_chunk_after: int | None = None  # the wire format's error event, then the body ends
    hang_after: int | None = None  # send nothing more, keep the connection open
    hang_before_headers: bool = False  # read the request, never answer
    invalid_json_after: int | None = None  # a `data:` line that is not JSON, then the body ends

    def token_texts(self) -> list[str]:
        return list(self.tokens) if self.tokens is not None else deterministic_tokens(self.n_tokens)


@dataclass(eq=False)
class RecordedRequest:
    """One request as the fake saw it. Times are `time.monotonic()`."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None
    started_at: float
    scenario: Scenario | None = None
    status: int | None = None
    tokens_sent: int = 0  # content tokens written to the connection
    text_sent: str = ""
    usage: dict[str, Any] | None = None  # the usage reported in the final chunk, if any
    request_id: str | None = None  # x_groq.id (and x-request-id)
    first_token_at: float | None = None
    finished_at: float | None = None  # the whole response was written
    client_closed_at: float | None = None  # the client closed the connection before that
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # finished, failed or abandoned

    @property
    def client_closed_early(self) -> bool:
        return self.client_closed_at is not None


class _BadRequest(Exception):
    pass


class _Connection:
    """A client connection with a read buffer shared by the request parser and the EOF watcher."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()

    async def read_more(self) -> bool:
        try:
            data = await self.reader.read(_READ_SIZE)
        except OSError:
            return False
        if not data:
            return False
        self.buffer += data
        return True

    async def read_head(self) -> bytes | None:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > _MAX_HEAD_BYTES:
                raise _BadRequest("request head too large")
            if not await self.read_more():
                return None

    async def read_body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not await self.read_more():
                raise _BadRequest("connection closed inside the request body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    async def wait_closed_by_client(self) -> None:
        """Return when the client closes its side (a streaming client sends nothing meanwhile)."""
        while await self.read_more():
            pass

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def wait_written(self) -> None:
        # Polling is fine here: the transport offers no event for an emptied write buffer.
        while self.writer.transport.get_write_buffer_size():  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    def abort(self) -> None:
        self.writer.transport.abort()


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Encoder(Protocol):
    """How one provider frames the events of one streamed reply."""

    request_id: str

    def headers(self) -> list[str]:
        """Extra response headers (`name: value`), the request id's among them."""
        ...

    def start(self) -> bytes:
        """The events before the first token (sent with it)."""
        ...

    def content(self, text: str, finish_reason: str | None) -> bytes:
        """One token's event; `finish_reason` is the reply's when this is its last token."""
        ...

    def end(self, finish_reason: str, usage: dict[str, int] | None) -> bytes:
        """The events after the text: finish reason and usage (None: no usage sent)."""
        ...

    def done(self) -> bytes:
        """The end marker."""
        ...

    def error(self) -> bytes:
        """An error event mid-stream."""
        ...

    def comment(self) -> bytes:
        """A keep-alive between events."""
        ...


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def rough_prompt_tokens(body: dict[str, Any]) -> int:
    """About a token per four characters of every message (and of `system`), plus framing."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    total = 3
    system = body.get("system")
    if isinstance(system, str):
        total += 4 + (len(system) + 3) // 4
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        total += 4 + (len(content) + 3) // 4 if isinstance(content, str) else 4
    return total


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:26]}"


class FakeUpstream:
    """The loopback server. Use it as an async context manager (or `start()` / `aclose()`).

    Subclasses set `chat_path` and implement `_encoder`, `_error_payload` and (when the key does
    not travel as a bearer token) `_authorized`."""

    chat_path: ClassVar[str]
    name: ClassVar[str] = "fake upstream"

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        default_scenario: Scenario | None = None,
        record_requests: bool = True,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key  # None accepts any key
        self.ssl = ssl  # serve https:// with this context
        self.host = host
        self.port = port
        self.default_scenario = self._initial_default = default_scenario or Scenario()
        self.record_requests = record_requests
        self.requests: list[RecordedRequest] = []
        self.request_count = 0
        self.connection_count = 0  # TCP connections accepted
        self._queue: deque[Scenario] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def enqueue(self, *scenarios: Scenario) -> None:
        """Answer the next requests with these scenarios, in order."""
        self._queue.extend(scenarios)

    def reset(self) -> None:
        """Forget scenarios and recorded requests (between tests sharing one fake)."""
        self._queue.clear()
        self.default_scenario = self._initial_default
        self.requests = []

    async def start(self) -> FakeUpstream:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=_READ_SIZE, backlog=1024, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- helpers for tests ---

    async def wait_for_request(self, index: int, timeout: float = 5.0) -> RecordedRequest:
        """The request number `index` (from 0), once it has arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) <= index:
                arrived = self._arrived
                await arrived.wait()
        return self.requests[index]

    async def wait_for_disconnect(self, index: int, timeout: float = 1.0) -> RecordedRequest:
        """Wait until the client closed the connection of request `index` before its end."""
        request = await self.wait_for_request(index, timeout)
        async with asyncio.timeout(timeout):
            await request.disconnected.wait()
        return request

    async def wait_for_done(self, index: int, timeout: float = 5.0) -> RecordedRequest:
        request = await self.wait_for_request(index, timeout)
        async with asyncio.timeout(timeout):
            await request.done.wait()
        return request

    # --- serving ---

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connection_count += 1
        conn = _Connection(reader, writer)
        try:
            while True:
                head = await conn.read_head()
                if head is None:
                    return
                if not await self._serve_one(conn, head):
                    return
        except (_BadRequest, OSError, UnicodeDecodeError, ValueError):
            return
        except asyncio.CancelledError:
            # Only `aclose()` cancels a handler, and nothing awaits it but `aclose()`; asyncio
            # 3.11 would log a cancelled connection callback as an error.
            return
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _serve_one(self, conn: _Connection, head: bytes) -> bool:
        """Answer one request; False when the connection cannot be reused."""
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequest("chunked request bodies are not supported")
        length = int(headers.get("content-length", "0") or "0")
        if length > _MAX_BODY_BYTES:
            raise _BadRequest("request body too large")
        raw_body = await conn.read_body(length) if length else b""

        body: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.loads(raw_body) if raw_body else None
        record = RecordedRequest(
            index=len(self.requests),
            method=method,
            path=path,
            headers=headers,
            body=body,
            started_at=time.monotonic(),
        )
        self.request_count += 1
        if self.record_requests:
            self.requests.append(record)
            self._arrived.set()
            self._arrived = asyncio.Event()
        try:
            return await self._respond(conn, record)
        finally:
            record.done.set()

    async def _respond(self, conn: _Connection, record: RecordedRequest) -> bool:
        if not self._authorized(record):
            return await self._error(conn, record, 401)
        if record.path.split("?", 1)[0] != self.chat_path:
            return await self._error(conn, record, 404)
        if record.method != "POST":
            return await self._error(conn, record, 405, message="Method not allowed.")
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await self._error(conn, record, 400, message="'messages' is required.")

        scenario = self._queue.popleft() if self._queue else self.default_scenario
        record.scenario = scenario
        if scenario.status != 200:
            return await self._error(conn, record, scenario.status, scenario=scenario)
        if body.get("stream") is not True:
            return await self._complete(conn, record, scenario)

        stream = asyncio.create_task(self._stream(conn, record, scenario))
        closed = asyncio.create_task(conn.wait_closed_by_client())
        try:
            await asyncio.wait({stream, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not stream.done():
                stream.cancel()
            closed.cancel()
            results = await asyncio.gather(stream, closed, return_exceptions=True)
        if record.finished_at is None and closed.done() and not closed.cancelled():
            record.client_closed_at = time.monotonic()
            record.disconnected.set()
            return False
        keep_alive = results[0]
        return keep_alive if isinstance(keep_alive, bool) else False

    async def _error(
        self,
        conn: _Connection,
        record: RecordedRequest,
        status: int,
        *,
        scenario: Scenario | None = None,
        message: str | None = None,
    ) -> bool:
        payload = self._error_payload(status, scenario, message)
        extra: list[tuple[str, str]] = []
        if scenario is not None and scenario.retry_after is not None:
            extra.append(("retry-after", scenario.retry_after))
        if scenario is not None and scenario.retry_after_ms is not None:
            extra.append(("retry-after-ms", scenario.retry_after_ms))
        if scenario is None or scenario.send_request_id_header:
            record.request_id = new_request_id()
            extra.append((self.request_id_header, record.request_id))
        await self._write_json(conn, record, status, payload, extra)
        return True

    # --- what a provider's fake says differently ---

    request_id_header: ClassVar[str] = "x-request-id"

    def _authorized(self, record: RecordedRequest) -> bool:
        expected = f"Bearer {self.api_key}"
        return self.api_key is None or record.headers.get("authorization") == expected

    def _encoder(self, record: RecordedRequest, scenario: Scenario) -> Encoder:
        raise NotImplementedError

    def _error_payload(
        self, status: int, scenario: Scenario | None, message: str | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _complete_payload(
        self, record: RecordedRequest, text: str, finish_reason: str | None, usage: dict[str, int]
    ) -> tuple[dict[str, Any], str]:
        """A non-streaming answer's body and request id."""
        raise NotImplementedError

    async def _write_json(
        self,
        conn: _Connection,
        record: RecordedRequest,
        status: int,
        payload: dict[str, Any],
        extra_headers: list[tuple[str, str]],
    ) -> None:
        body = orjson.dumps(payload)
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: keep-alive",
            *(f"{name}: {value}" for name, value in extra_headers),
        ]
        record.status = status
        conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await conn.drain()
        record.finished_at = time.monotonic()

    async def _complete(
        self, conn: _Connection, record: RecordedRequest, scenario: Scenario
    ) -> bool:
        """A non-streaming answer (`stream` absent or false), for completeness."""
        tokens, finish_reason = self._reply(record.body, scenario)
        record.tokens_sent, record.text_sent = len(tokens), "".join(tokens)
        usage = self._usage(record, scenario, len(tokens))
        payload, request_id = self._complete_payload(record, record.text_sent, finish_reason, usage)
        record.request_id = request_id
        await self._write_json(conn, record, 200, payload, [(self.request_id_header, request_id)])
        return True

    @staticmethod
    def _reply(body: dict[str, Any], scenario: Scenario) -> tuple[list[str], str | None]:
        tokens = scenario.token_texts()
        limit = _max_tokens(body) if scenario.honor_max_tokens else None
        if limit is not None and limit < len(tokens):
            return tokens[:limit], "length"
        return tokens, scenario.finish_reason

    @staticmethod
    def _prompt_tokens(record: RecordedRequest, scenario: Scenario) -> int:
        if scenario.prompt_tokens is not None:
            return scenario.prompt_tokens
        return rough_prompt_tokens(record.body)

    @classmethod
    def _usage(cls, record: RecordedRequest, scenario: Scenario, sent: int) -> dict[str, int]:
        completion = scenario.completion_tokens if scenario.completion_tokens is not None else sent
        return {
            "prompt_tokens": cls._prompt_tokens(record, scenario),
            "completion_tokens": completion,
        }

    async def _stream(self, conn: _Connection, record: RecordedRequest, scenario: Scenario) -> bool:
        """Write the event stream; False when the connection is left unusable."""
        if scenario.hang_before_headers:
            await asyncio.Event().wait()
        body: dict[str, Any] = record.body
        tokens, finish_reason = self._reply(body, scenario)
        encoder = self._encoder(record, scenario)
        record.request_id = encoder.request_id
        record.status = 200
        headers = [
            "HTTP/1.1 200 OK",
            "content-type: text/event-stream",
            "cache-control: no-cache",
            "connection: keep-alive",
            "transfer-encoding: chunked",
        ]
        if scenario.send_request_id_header:
            headers += encoder.headers()

        loop = asyncio.get_running_loop()
        out = _StreamWriter(conn, record, scenario, encoder)
        out.raw(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        start = loop.time()
        for sent in range(len(tokens) + 1):
            fault = await self._fault(conn, scenario, sent, out, encoder)
            if fault is not None:
                return fault
            if sent == len(tokens):
                break
            due = start + scenario.first_token_delay + sent * scenario.token_interval
            delay = due - loop.time()
            if delay > 0:
                await out.flush()
                await asyncio.sleep(delay)
            if sent == 0:
                out.event(encoder.start())
            # The finish reason, for wire formats that may send it with the last text.
            reason = finish_reason if sent == len(tokens) - 1 else None
            out.event(encoder.content(tokens[sent], reason), tokens[sent])

        if not tokens:
            out.event(encoder.start())
        if finish_reason is not None:
            usage = None
            if scenario.usage_placement != "none":
                usage = self._usage(record, scenario, len(tokens))
            record.usage = usage
            out.event(encoder.end(finish_reason, usage))
        if scenario.send_done:
            out.event(encoder.done())
        out.raw(_END_OF_BODY)
        await out.flush()
        record.finished_at = time.monotonic()
        return True

    @staticmethod
    async def _fault(
        conn: _Connection, scenario: Scenario, sent: int, out: _StreamWriter, encoder: Encoder
    ) -> bool | None:
        """Apply the scenario's fault due after `sent` tokens: the keep-alive verdict, or None."""
        if scenario.drop_after == sent:
            await out.flush()
            await conn.wait_written()
            conn.abort()
            return False
        if scenario.error_chunk_after == sent:
            out.event(encoder.error())
            out.raw(_END_OF_BODY)
            await out.flush()
            return True
        if scenario.invalid_json_after == sent:
            out.event(b'data: {"id": "broken", "type": [\n\n')
            out.raw(_END_OF_BODY)
            await out.flush()
            return True
        if scenario.hang_after == sent:
            await out.flush()
            await asyncio.Event().wait()
        return None


class _StreamWriter:
    """A response's bytes, buffered between flushes; the scenario's pace decides the flushes."""

    def __init__(
        self, conn: _Connection, record: RecordedRequest, scenario: Scenario, encoder: Encoder
    ) -> None:
        self._conn = conn
        self._encoder = encoder
        self._record = record
        self._scenario = scenario
        self._raw: list[bytes] = []  # ready for the wire
        self._events: list[bytes] = []  # SSE events not framed into HTTP chunks yet
        self._texts: list[str] = []  # content tokens among them

    def raw(self, data: bytes) -> None:
        self._frame_events()
        self._raw.append(data)

    def event(self, data: bytes, text: str | None = None) -> None:
        if not data:  # an empty HTTP chunk would end the body
            return
        if self._scenario.comment_lines:
            data = self._encoder.comment() + data
        self._events.append(data)
        if text is not None:
            self._texts.append(text)

    async def flush(self) -> None:
        self._frame_events()
        if self._raw:
            self._conn.write(b"".join(self._raw))
            self._raw.clear()
        if self._texts:
            record = self._record
            if record.first_token_at is None:
                record.first_token_at = time.monotonic()
            record.tokens_sent += len(self._texts)
            record.text_sent += "".join(self._texts)
            self._texts.clear()
        await self._conn.drain()

    def _frame_events(self) -> None:
        if not self._events:
            return
        scenario = self._scenario
        units = [b"".join(self._events)] if scenario.http_chunks == "per_write" else self._events
        for unit in units:
            if scenario.fragment_events and len(unit) > 1:
                half = len(unit) // 2
                self._raw.append(_chunked(unit[:half]) + _chunked(unit[half:]))
            else:
                self._raw.append(_chunked(unit))
        self._events = []


async def serve_forever(fake: FakeUpstream) -> None:
    """Serve until SIGINT or SIGTERM (benchmarks run a fake as a process of its own)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(f"{fake.name} listening on {fake.base_url}", flush=True)
        await stop.wait()
    print(f"{fake.name} served {fake.request_count} requests", flush=True)


def command_line(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--api-key", default=None, help="expected key (default: any)")
    parser.add_argument("--tokens", type=int, default=50, help="content chunks per reply")
    parser.add_argument("--first-token-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--token-interval", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--ignore-max-tokens",
        action="store_true",
        help="always send --tokens chunks, whatever the request's length limit",
    )
    return parser.parse_args(argv)


def scenario_of(args: argparse.Namespace) -> Scenario:
    return Scenario(
        n_tokens=args.tokens,
        first_token_delay=args.first_token_delay,
        token_interval=args.token_interval,
        honor_max_tokens=not args.ignore_max_tokens,
    )
