"""Groq through its official async SDK, reading the event stream's raw bytes ourselves.

The SDK builds, authenticates and sends the request and turns HTTP errors into exceptions. Its
parsed stream is not used: it builds a pydantic model per chunk (~140 µs), which would dominate
the CPU cost of a reply. Instead the SSE lines are split out of the body's bytes here and only
the few fields we need are read with orjson.

The text of all the chunks parsed from one read of the body becomes one `TextDelta`. (httpx
hands over the body one HTTP chunk at a time, so this joins events only when the server packs
several into one chunk; a consumer that falls behind is the reply pipeline's to catch up, which
reads the provider in a task of its own and joins what piled up.)

The SDK's own retries are off (they would stack on ours). Ours follow `app.llm.base`: only
before the first `TextDelta`, for 408, 409, 429, 5xx, connection failures, timeouts and streams
that break before any text; waits grow exponentially with jitter unless Groq advises a wait
(`retry-after-ms`, `retry-after`), and an advised wait longer than `retry_max_wait` is not
waited for: the error goes to the caller with its `retry_after`.

The request is sent when iteration starts. Leaving `stream()`'s block closes the HTTP response:
httpx then closes the connection of an unfinished response instead of draining it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

import groq
import httpx
import orjson
import structlog
from groq.types.chat import ChatCompletionMessageParam

from app.config import HttpClientKind, Settings
from app.llm.base import (
    ChatMessage,
    ChatRequest,
    ChatStream,
    Finish,
    ProviderError,
    ProviderEvent,
    StopReason,
    TextDelta,
    Usage,
)
from app.llm.http import BufferedTransport

logger = structlog.get_logger(__name__)

_STOP_REASONS: dict[str, StopReason] = {"stop": "end_turn", "length": "max_tokens"}
_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 8.0
# After `[DONE]` the chunked body's terminator normally sits in the same read; reading it lets
# the connection go back to the pool. A server that holds the body open is not waited for long.
_DRAIN_SECONDS = 0.5
_MAX_LINE_BYTES = 4 * 1024 * 1024
# Only a short identifier from an upstream body reaches a message; never the body itself.
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class _AttemptFailed(Exception):
    """One attempt failed with `error`; `retryable` if a new attempt may succeed."""

    def __init__(self, error: ProviderError, *, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


class GroqProvider:
    name = "groq"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        retry_max_wait: float,
        max_connections: int,
        http_client_kind: HttpClientKind = "buffered",
    ) -> None:
        # `read` bounds the wait for every next byte, the first token included; `pool` the wait
        # for a free connection, so a saturated pool fails instead of queueing forever.
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        if http_client_kind == "buffered":
            transport: httpx.AsyncBaseTransport = BufferedTransport(max_connections=max_connections)
        else:  # httpx's own transport: slower per chunk, but it honours HTTPS_PROXY and friends
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                )
            )
        client = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            http_client=client,
        )
        self._read_timeout = read_timeout
        self._max_retries = max_retries
        self._retry_max_wait = retry_max_wait

    @classmethod
    def from_settings(cls, settings: Settings) -> GroqProvider:
        if settings.groq_api_key is None:
            raise ValueError("GROQ_API_KEY is required for the Groq provider")
        return cls(
            api_key=settings.groq_api_key.get_secret_value(),
            base_url=settings.groq_base_url,
            connect_timeout=settings.llm_connect_timeout_seconds,
            read_timeout=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            retry_max_wait=settings.llm_retry_max_wait_seconds,
            max_connections=settings.llm_max_connections,
            http_client_kind=settings.llm_http_client,
        )

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        stream = _GroqStream(self, request)
        try:
            yield stream
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    def _retry_wait(self, attempt: int, advised: float | None) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None if it is not worth it."""
        if advised is not None:
            return advised if advised <= self._retry_max_wait else None
        backoff = min(
            _BACKOFF_BASE_SECONDS * 2.0**attempt, _BACKOFF_CAP_SECONDS, self._retry_max_wait
        )
        # Jitter spreads the retries of streams that failed together; not a security matter.
        return backoff * random.uniform(0.5, 1.0)  # noqa: S311


class _GroqStream:
    def __init__(self, provider: GroqProvider, request: ChatRequest) -> None:
        self._provider = provider
        self._request = request
        self.request_id: str | None = None
        self._events: AsyncGenerator[ProviderEvent, None] | None = None

    def __aiter__(self) -> AsyncIterator[ProviderEvent]:
        if self._events is not None:
            raise RuntimeError("a Groq stream can be iterated only once")
        self._events = self._attempts()
        return self._events

    async def aclose(self) -> None:
        if self._events is not None:
            await self._events.aclose()

    async def _attempts(self) -> AsyncGenerator[ProviderEvent, None]:
        provider = self._provider
        attempt = 0
        while True:
            text_sent = False
            try:
                # aclosing: a consumer that stops early must close the response now, not at GC.
                async with aclosing(self._attempt()) as events:
                    async for event in events:
                        text_sent = True
                        yield event
                return
            except (_AttemptFailed, groq.APIError, httpx.HTTPError) as exc:
                failure = self._failure(exc)
                error = failure.error
                if text_sent or not failure.retryable or attempt >= provider._max_retries:
                    raise error from None
                wait = provider._retry_wait(attempt, error.retry_after)
                if wait is None:
                    raise error from None
                logger.info(
                    "groq_retry",
                    attempt=attempt + 1,
                    wait_seconds=round(wait, 3),
                    kind=error.kind,
                    reason=error.message,
                    request_id=self.request_id,
                )
                await asyncio.sleep(wait)
                attempt += 1

    async def _attempt(self) -> AsyncGenerator[ProviderEvent, None]:
        """One request: `TextDelta`s, then a `Finish`. Failures raise; the caller retries."""
        request = self._request
        completions = self._provider._client.chat.completions
        async with completions.with_streaming_response.create(
            model=request.model,
            messages=[_message_param(m) for m in request.messages],
            max_completion_tokens=request.max_tokens,
            temperature=request.temperature if request.temperature is not None else groq.omit,
            stream=True,
        ) as response:
            header_id = response.headers.get("x-request-id")
            if header_id:
                self.request_id = header_id
            parser = _EventParser()
            # httpx's iterators are async generators: close them in order, not at GC.
            raw = cast("AsyncGenerator[bytes, None]", response.http_response.aiter_bytes())
            async with aclosing(raw) as chunks:
                try:
                    async for data in chunks:
                        texts: list[str] = []
                        broken: _AttemptFailed | None = None
                        try:
                            parser.feed(data, texts)
                        except _AttemptFailed as exc:
                            broken = exc  # the text before the broken event still counts
                        if self.request_id is None:
                            self.request_id = parser.request_id
                        if texts:
                            yield TextDelta(texts[0] if len(texts) == 1 else "".join(texts))
                        if broken is not None:
                            raise broken
                        if parser.done:
                            break
                except httpx.HTTPError:
                    # A connection lost after the finish reason still delivered the whole reply.
                    if parser.finish_reason is None:
                        raise
                if parser.done:
                    await _drain(chunks)
        if self.request_id is None:
            self.request_id = parser.request_id
        yield parser.finish()

    def _failure(self, exc: Exception) -> _AttemptFailed:
        if isinstance(exc, _AttemptFailed):
            return exc
        if isinstance(exc, groq.APIStatusError):
            header_id = exc.response.headers.get("x-request-id")
            if header_id:
                self.request_id = header_id
            return _status_failure(exc)
        if isinstance(exc, groq.APITimeoutError | httpx.TimeoutException):
            cause = exc.__cause__ if isinstance(exc, groq.APITimeoutError) else exc
            if isinstance(cause, httpx.PoolTimeout):
                message = "Every connection to Groq stayed busy"
            elif isinstance(cause, httpx.ConnectTimeout):
                message = "Timed out connecting to Groq"
            else:
                message = f"Groq sent nothing for {self._provider._read_timeout:g} seconds"
            return _AttemptFailed(ProviderError(message, kind="timeout_error"), retryable=True)
        if isinstance(exc, groq.APIConnectionError):
            return _AttemptFailed(ProviderError("Could not connect to Groq"), retryable=True)
        if isinstance(exc, httpx.HTTPError):
            return _AttemptFailed(ProviderError("The Groq stream was cut off"), retryable=True)
        return _AttemptFailed(ProviderError("The Groq request failed"), retryable=False)


class _EventParser:
    """Groq's `chat.completion.chunk` events out of raw SSE bytes, fed as they arrive."""

    __slots__ = ("_buffer", "_top_usage", "_x_groq_usage", "done", "finish_reason", "request_id")

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False
        self.finish_reason: str | None = None
        self.request_id: str | None = None
        self._x_groq_usage: Usage | None = None
        self._top_usage: Usage | None = None

    def feed(self, data: bytes, texts: list[str]) -> None:
        """Append to `texts` the text of every content chunk that `data` completes."""
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > _MAX_LINE_BYTES:
            raise _AttemptFailed(
                ProviderError("Groq sent an oversized stream event"), retryable=True
            )
        for line in lines:
            # Blank lines end events; comments (": ping") and other fields carry nothing for us.
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            text = self._event(payload)
            if text:
                texts.append(text)

    def _event(self, payload: bytes) -> str | None:
        try:
            event = orjson.loads(payload)
            error = event.get("error")
            if error is not None:
                raise _stream_error(error)
            x_groq = event.get("x_groq")
            if self.request_id is None:
                groq_id = x_groq.get("id") if x_groq else None
                self.request_id = str(groq_id or event.get("id") or "") or None
            if x_groq and (usage := x_groq.get("usage")):
                self._x_groq_usage = _usage(usage)
            if usage := event.get("usage"):
                self._top_usage = _usage(usage)
            choices = event.get("choices")
            if not choices:
                return None
            choice = choices[0]
            if reason := choice.get("finish_reason"):
                self.finish_reason = str(reason)
            delta = choice.get("delta")
            content = delta.get("content") if delta else None
            return content if isinstance(content, str) else None
        except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError, IndexError):
            raise _AttemptFailed(
                ProviderError("Groq sent an unreadable stream event"), retryable=True
            ) from None

    def finish(self) -> Finish:
        if self.finish_reason is None and not self.done:
            raise _AttemptFailed(
                ProviderError("The Groq stream ended before the reply was complete"),
                retryable=True,
            )
        stop_reason = _STOP_REASONS.get(self.finish_reason or "stop", "end_turn")
        return Finish(stop_reason, self._x_groq_usage or self._top_usage)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in chunks:
                pass


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _usage(raw: Any) -> Usage | None:
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(input_tokens=prompt, output_tokens=completion)
    return None


def _stream_error(error: Any) -> _AttemptFailed:
    error_type = error.get("type") if isinstance(error, dict) else None
    label = error_type if isinstance(error_type, str) and _SAFE_CODE.fullmatch(error_type) else None
    message = f"Groq reported an error mid-stream ({label})" if label else "Groq reported an error"
    # A request Groq calls invalid fails the same way again.
    return _AttemptFailed(ProviderError(message), retryable=error_type != "invalid_request_error")


def _status_failure(exc: groq.APIStatusError) -> _AttemptFailed:
    status = exc.status_code
    retry_after = _retry_after(exc.response.headers)
    if status == 429:
        error = ProviderError(
            "Groq's rate limit was reached", kind="rate_limit_error", retry_after=retry_after
        )
        return _AttemptFailed(error, retryable=True)
    if status in (503, 498):  # 498: Groq's flex tier is out of capacity
        error = ProviderError(
            f"Groq is overloaded (HTTP {status})", kind="overloaded_error", retry_after=retry_after
        )
        return _AttemptFailed(error, retryable=True)
    if status >= 500 or status in (408, 409):
        error = ProviderError(f"Groq failed (HTTP {status})", retry_after=retry_after)
        return _AttemptFailed(error, retryable=True)
    if status == 401:
        return _AttemptFailed(ProviderError("Groq refused the API key (HTTP 401)"), retryable=False)
    code = _error_code(exc.body)
    detail = f": {code}" if code else ""
    return _AttemptFailed(
        ProviderError(f"Groq rejected the request (HTTP {status}{detail})"), retryable=False
    )


def _error_code(body: object) -> str | None:
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Groq's advised wait in seconds: `retry-after-ms`, else `retry-after` (seconds or a date)."""
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
