"""What every SDK-backed provider shares: retries, the first token's deadline, errors, raw reading.

The vendors' SDKs (groq, openai, anthropic) are generated from one template: each builds,
authenticates and sends the request and turns HTTP errors into the same exception types. Their
parsed streams are not used: they build a pydantic model per event (~100 µs), which would
dominate the CPU cost of a reply. Instead the response body's bytes are handed to a `StreamParser`
of the wire format (Chat Completions, Anthropic Messages), which reads only the fields we need.
The text of all the events parsed from one read of the body becomes one `TextDelta`.

The contract's timeouts: `timeout` (LLM_TIMEOUT_SECONDS) is the longest wait for the provider's
next byte. Before the first token it is one deadline over every attempt: retries happen only
within it, so a hung model fails the reply after one timeout, not `(1 + retries) * timeout`.
After the first token the HTTP client's read timeout bounds each silence.

Retries follow `app.llm.base`: only before the first `TextDelta`, for 408, 409, 429, 5xx,
connection failures, timeouts and streams that break before any text; waits grow exponentially
with jitter unless the provider advises one (`retry-after-ms`, `retry-after`). An advised wait
longer than `max_wait`, or one that would end past the deadline, is not waited for: the error goes
to the caller with its `retry_after`. The SDKs' own retries are off (they would stack on ours).

The request is sent when iteration starts. Leaving `stream()`'s block closes the HTTP response,
and an unfinished response closes its connection instead of draining it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, cast

import aiohttp
import httpx2
import structlog

from app.config import HttpClientKind, Settings
from app.llm.base import ChatRequest, ChatStream, Finish, ProviderError, ProviderEvent, TextDelta

logger = structlog.get_logger(__name__)

_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 8.0
# After the end marker the body's terminator normally sits in the same read; reading it lets the
# connection go back to the pool. A server that holds the body open is not waited for long.
_DRAIN_SECONDS = 0.5
MAX_LINE_BYTES = 4 * 1024 * 1024
# Only a short identifier from an upstream body reaches a message; never the body itself.
SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


# httpx-aiohttp hands a body over 16 KiB at a time. While the server is behind, the reply pipeline
# reads its provider at most every STREAM_COALESCE_MS, so that size would cap a stream at about
# 0.5 MB/s exactly when it has to catch up. One read takes what the socket buffered instead (the
# SDKs ship their own copies of the adapter: each gets the same size).
_AIOHTTP_READ_BYTES = 1 << 20
_AIOHTTP_STREAMS = (
    "httpx_aiohttp.transport",
    "openai._vendor.httpx_aiohttp.transport",
    "anthropic._vendor.httpx_aiohttp.transport",
)


def read_whole_buffers() -> None:
    """Let the SDKs' aiohttp clients hand over everything buffered in one read."""
    for name in _AIOHTTP_STREAMS:
        with contextlib.suppress(ImportError, AttributeError):
            stream = importlib.import_module(name).AiohttpResponseStream
            stream.CHUNK_SIZE = max(stream.CHUNK_SIZE, _AIOHTTP_READ_BYTES)


class AttemptFailed(Exception):
    """One attempt failed with `error`; `retryable` if a new attempt may succeed."""

    def __init__(self, error: ProviderError, *, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout: float  # LLM_TIMEOUT_SECONDS
    max_retries: int  # LLM_MAX_RETRIES
    max_wait: float  # LLM_RETRY_MAX_WAIT_SECONDS

    def wait(self, attempt: int, advised: float | None) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None if it is not worth it."""
        if advised is not None:
            return advised if advised <= self.max_wait else None
        backoff = min(_BACKOFF_BASE_SECONDS * 2.0**attempt, _BACKOFF_CAP_SECONDS, self.max_wait)
        # Jitter spreads the retries of streams that failed together; not a security matter.
        return backoff * random.uniform(0.5, 1.0)  # noqa: S311


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """How a provider reaches its model: the same settings for every provider."""

    connect_timeout: float = 5.0  # LLM_CONNECT_TIMEOUT_SECONDS
    read_timeout: float = 30.0  # LLM_TIMEOUT_SECONDS
    max_retries: int = 2  # LLM_MAX_RETRIES
    retry_max_wait: float = 10.0  # LLM_RETRY_MAX_WAIT_SECONDS
    max_connections: int = 1000  # LLM_MAX_CONNECTIONS
    http_client: HttpClientKind = "aiohttp"  # LLM_HTTP_CLIENT

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderOptions:
        return cls(
            connect_timeout=settings.llm_connect_timeout_seconds,
            read_timeout=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            retry_max_wait=settings.llm_retry_max_wait_seconds,
            max_connections=settings.llm_max_connections,
            http_client=settings.llm_http_client,
        )

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.read_timeout, self.max_retries, self.retry_max_wait)

    def httpx2_client(
        self,
        aiohttp_client: Callable[..., httpx2.AsyncClient],
        httpx_client: Callable[..., httpx2.AsyncClient],
    ) -> httpx2.AsyncClient:
        """An httpx2 client for the openai or anthropic SDK, built by the SDK's own factories."""
        factory = aiohttp_client if self.http_client == "aiohttp" else httpx_client
        if self.http_client == "aiohttp":
            read_whole_buffers()
        # Neither passes a transport, so both honour HTTPS_PROXY / NO_PROXY (httpx2's mounts).
        n = self.max_connections
        return factory(
            timeout=self.httpx2_timeout,
            limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n),
        )

    @property
    def httpx2_timeout(self) -> httpx2.Timeout:
        # `read` bounds the wait for every next byte; `pool` the wait for a free connection, so
        # a saturated pool fails instead of queueing forever.
        return httpx2.Timeout(self.read_timeout, connect=self.connect_timeout)


@dataclass(frozen=True, slots=True)
class SdkErrors:
    """The exception types of one SDK and of the HTTP library under it (httpx or httpx2)."""

    status: type[Exception]  # APIStatusError: .status_code, .response, .body
    timeout: type[Exception]  # APITimeoutError (a subclass of `connection`)
    connection: type[Exception]  # APIConnectionError
    http: type[Exception]  # httpx.HTTPError
    http_timeout: type[Exception]  # httpx.TimeoutException
    pool_timeout: type[Exception]  # httpx.PoolTimeout
    connect_timeout: type[Exception]  # httpx.ConnectTimeout


class StreamParser(Protocol):
    """Events of one wire format out of a response body's bytes, fed as they arrive."""

    request_id: str | None  # the upstream's id for the request, once an event named it
    done: bool  # the end marker was read: nothing more to read

    @property
    def complete(self) -> bool:
        """The reply is whole (its finish reason was read): a connection lost now lost nothing."""
        ...

    def feed(self, data: bytes, texts: list[str]) -> None:
        """Append to `texts` the text of every event `data` completes; AttemptFailed if broken."""
        ...

    def finish(self) -> Finish:
        """The reply's end, once the body is read; AttemptFailed if the reply is incomplete."""
        ...


class _HttpResponse(Protocol):
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class SdkResponse(Protocol):
    """What `with_streaming_response.create(...)` yields, in every SDK."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def http_response(self) -> _HttpResponse: ...


class Wire(Protocol):
    """What one provider adds to the shared machinery: its request and its wire format."""

    label: str  # the provider as messages name it: "Groq", "OpenAI", "Anthropic"
    errors: SdkErrors
    request_id_headers: tuple[str, ...]
    overloaded_statuses: frozenset[int]

    def open(self, request: ChatRequest) -> AbstractAsyncContextManager[SdkResponse]:
        """Send the request through the SDK (its retries off); HTTP errors raise."""
        ...

    def parser(self) -> StreamParser: ...


class SdkProvider:
    """A `ChatProvider` over one `Wire`. Subclasses build the SDK client and the wire."""

    name: str

    def __init__(
        self,
        wire: Wire,
        policy: RetryPolicy,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._wire = wire
        self._policy = policy
        self._close = close  # closes what this provider built (not a client passed in)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        stream = _SdkStream(self.name, self._wire, self._policy, request)
        try:
            yield stream
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        if self._close is not None:
            await self._close()


class _SdkStream:
    def __init__(self, name: str, wire: Wire, policy: RetryPolicy, request: ChatRequest) -> None:
        self._name = name
        self._wire = wire
        self._policy = policy
        self._request = request
        self.request_id: str | None = None
        self._events: AsyncGenerator[ProviderEvent, None] | None = None

    def __aiter__(self) -> AsyncIterator[ProviderEvent]:
        if self._events is not None:
            raise RuntimeError("a provider stream can be iterated only once")
        self._events = self._attempts()
        return self._events

    async def aclose(self) -> None:
        if self._events is not None:
            await self._events.aclose()

    async def _attempts(self) -> AsyncGenerator[ProviderEvent, None]:
        policy = self._policy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.timeout
        attempt = 0
        while True:
            # aclosing: a consumer that stops early must close the response now, not at GC.
            async with aclosing(self._attempt()) as events:
                try:
                    # No yield inside: the deadline cancels only this stream's own work.
                    async with asyncio.timeout_at(deadline) as first_token:
                        first = await anext(events)
                except Exception as exc:  # noqa: BLE001  (classified; the unknown re-raised)
                    if isinstance(exc, TimeoutError) and first_token.expired():
                        raise self._silence() from None  # the deadline is spent: no retry
                    failure = self._failure(exc)
                    wait = self._retry_wait(failure, attempt, deadline - loop.time())
                    if wait is None:
                        raise failure.error from None
                else:
                    yield first
                    try:
                        async for event in events:
                            yield event
                    except Exception as exc:  # noqa: BLE001  (classified; the unknown re-raised)
                        raise self._failure(exc).error from None
                    return
            logger.info(
                "provider_retry",
                provider=self._name,
                attempt=attempt + 1,
                wait_seconds=round(wait, 3),
                kind=failure.error.kind,
                reason=failure.error.message,
                request_id=self.request_id,
            )
            await asyncio.sleep(wait)
            attempt += 1

    def _retry_wait(self, failure: AttemptFailed, attempt: int, remaining: float) -> float | None:
        if not failure.retryable or attempt >= self._policy.max_retries:
            return None
        wait = self._policy.wait(attempt, failure.error.retry_after)
        # A retry that could not start before the first token's deadline is not worth waiting for.
        return wait if wait is not None and wait < remaining else None

    async def _attempt(self) -> AsyncGenerator[ProviderEvent, None]:
        """One request: `TextDelta`s, then a `Finish`. Failures raise; the caller retries."""
        wire = self._wire
        async with wire.open(self._request) as response:
            self._note_request_id(response.headers)
            parser = wire.parser()
            # The HTTP library's iterators are async generators: close them in order, not at GC.
            raw = cast("AsyncGenerator[bytes, None]", response.http_response.aiter_bytes())
            async with aclosing(raw) as chunks:
                try:
                    async for data in chunks:
                        texts: list[str] = []
                        broken: AttemptFailed | None = None
                        try:
                            parser.feed(data, texts)
                        except AttemptFailed as exc:
                            broken = exc  # the text before the broken event still counts
                        if self.request_id is None:
                            self.request_id = parser.request_id
                        if texts:
                            yield TextDelta(texts[0] if len(texts) == 1 else "".join(texts))
                        if broken is not None:
                            raise broken
                        if parser.done:
                            break
                except (wire.errors.http, aiohttp.ClientError):
                    # A connection lost after the finish reason still delivered the whole reply.
                    if not parser.complete:
                        raise
                if parser.done:
                    await _drain(chunks, wire.errors.http)
        if self.request_id is None:
            self.request_id = parser.request_id
        yield parser.finish()

    def _note_request_id(self, headers: Mapping[str, str]) -> None:
        for name in self._wire.request_id_headers:
            if value := headers.get(name):
                self.request_id = value[:128]
                return

    def _silence(self) -> ProviderError:
        seconds = f"{self._policy.timeout:g}"
        return ProviderError(
            f"{self._wire.label} sent nothing for {seconds} seconds", kind="timeout_error"
        )

    def _failure(self, exc: Exception) -> AttemptFailed:
        if isinstance(exc, AttemptFailed):
            return exc
        label, errors = self._wire.label, self._wire.errors
        if isinstance(exc, errors.status):
            response = exc.response  # type: ignore[attr-defined]
            self._note_request_id(response.headers)
            return status_failure(
                label,
                exc.status_code,  # type: ignore[attr-defined]
                response.headers,
                exc.body,  # type: ignore[attr-defined]
                self._wire.overloaded_statuses,
            )
        if isinstance(exc, TimeoutError):  # a timeout no library wrapped (aiohttp's, say)
            message = f"{label} sent nothing for {self._policy.timeout:g} seconds"
            return AttemptFailed(ProviderError(message, kind="timeout_error"), retryable=True)
        if isinstance(exc, errors.timeout | errors.http_timeout) and not _lost_connection(exc):
            cause = exc.__cause__ if isinstance(exc, errors.timeout) else exc
            if isinstance(cause, errors.pool_timeout):
                message = f"Every connection to {label} stayed busy"
            elif isinstance(cause, errors.connect_timeout):
                message = f"Timed out connecting to {label}"
            else:
                message = f"{label} sent nothing for {self._policy.timeout:g} seconds"
            return AttemptFailed(ProviderError(message, kind="timeout_error"), retryable=True)
        if isinstance(exc, errors.connection):
            return AttemptFailed(ProviderError(f"Could not connect to {label}"), retryable=True)
        if isinstance(exc, errors.http | aiohttp.ClientError):
            return AttemptFailed(ProviderError(f"The {label} stream was cut off"), retryable=True)
        raise exc


def _lost_connection(exc: BaseException) -> bool:
    """Whether aiohttp lost the connection under an error that the httpx adapter calls a timeout.

    httpx-aiohttp maps every `aiohttp.ClientConnectionError` (a server that closed the
    connection, say) to `ConnectTimeout`; the cause tells the two apart.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ClientError):
            return not isinstance(seen, aiohttp.ServerTimeoutError)
        seen = seen.__cause__
    return False


async def _drain(chunks: AsyncIterator[bytes], http_error: type[Exception]) -> None:
    with contextlib.suppress(http_error, aiohttp.ClientError, TimeoutError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in chunks:
                pass


class SseLines:
    """The `data:` payloads of a Server-Sent Events body, fed as bytes arrive.

    Blank lines end events; comments (`: ping`) and other fields (`event:`, `id:`) carry nothing
    the parsers need: every wire format here repeats the event's type inside its JSON.
    """

    __slots__ = ("_buffer", "_label")

    def __init__(self, label: str) -> None:
        self._buffer = b""
        self._label = label

    def feed(self, data: bytes) -> list[bytes]:
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_BYTES:
            raise AttemptFailed(
                ProviderError(f"{self._label} sent an oversized stream event"), retryable=True
            )
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]


def unreadable(label: str) -> AttemptFailed:
    return AttemptFailed(ProviderError(f"{label} sent an unreadable stream event"), retryable=True)


def incomplete(label: str) -> AttemptFailed:
    return AttemptFailed(
        ProviderError(f"The {label} stream ended before the reply was complete"), retryable=True
    )


def safe_code(value: object) -> str | None:
    return value if isinstance(value, str) and SAFE_CODE.fullmatch(value) else None


def status_failure(
    label: str,
    status: int,
    headers: Mapping[str, str],
    body: object,
    overloaded: frozenset[int],
) -> AttemptFailed:
    retry_after = advised_wait(headers)
    if status == 429:
        error = ProviderError(
            f"{label}'s rate limit was reached", kind="rate_limit_error", retry_after=retry_after
        )
        return AttemptFailed(error, retryable=True)
    if status in overloaded:
        error = ProviderError(
            f"{label} is overloaded (HTTP {status})",
            kind="overloaded_error",
            retry_after=retry_after,
        )
        return AttemptFailed(error, retryable=True)
    if status >= 500 or status in (408, 409):
        error = ProviderError(f"{label} failed (HTTP {status})", retry_after=retry_after)
        return AttemptFailed(error, retryable=True)
    if status == 401:
        return AttemptFailed(
            ProviderError(f"{label} refused the API key (HTTP 401)"), retryable=False
        )
    code = _error_code(body)
    detail = f": {code}" if code else ""
    return AttemptFailed(
        ProviderError(f"{label} rejected the request (HTTP {status}{detail})"), retryable=False
    )


def _error_code(body: object) -> str | None:
    # {"error": {"code": ..., "type": ...}} (OpenAI, Groq) or {"type": "error", "error": {...}}.
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    return safe_code(error.get("code")) or safe_code(error.get("type"))


def advised_wait(headers: Mapping[str, str]) -> float | None:
    """The advised wait in seconds: `retry-after-ms`, else `retry-after` (seconds or a date)."""
    if value := headers.get("retry-after-ms"):
        with contextlib.suppress(ValueError):
            seconds = float(value) / 1000
            if 0 <= seconds < float("inf"):
                return seconds
    if value := headers.get("retry-after"):
        with contextlib.suppress(ValueError):
            seconds = float(value)
            return seconds if 0 <= seconds < float("inf") else None
        with contextlib.suppress(TypeError, ValueError, IndexError):
            at = parsedate_to_datetime(value)
            return max(0.0, (at - datetime.now(UTC)).total_seconds())
    return None
