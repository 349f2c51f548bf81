"""The model provider protocol: what the reply pipeline needs from Groq, the echo model, or a fake.

A provider opens a *stream* for one chat request:

    async with provider.stream(request) as stream:
        async for event in stream:        # TextDelta ..., then exactly one Finish
            ...

- `TextDelta` carries text in order. A provider may join several upstream chunks that arrived
  together into one delta (that is how a slow reader gets fewer, larger deltas); it never splits,
  drops or reorders text.
- `Finish` comes last, with the stop reason and, when the upstream reported it, the usage.
- Leaving the `async with` block for any reason (end, error, cancellation) closes the upstream
  request at once; an unfinished HTTP response is closed, not drained.
- Failures are `ProviderError`s. Retries are the provider's business and only ever happen before
  the first `TextDelta`: once text has been yielded, a failure ends the stream.
- `stream.request_id` is the upstream's id for the request once known (for support tickets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]
ErrorKind = Literal["upstream_error", "rate_limit_error", "timeout_error", "overloaded_error"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    stop_reason: StopReason
    usage: Usage | None = None
    stop_sequence: str | None = None


ProviderEvent = TextDelta | Finish


class ProviderError(Exception):
    """The provider failed. `kind` is what SSE clients see as `error.type`."""

    def __init__(
        self, message: str, *, kind: ErrorKind = "upstream_error", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.retry_after = retry_after


class ChatStream(Protocol):
    @property
    def request_id(self) -> str | None: ...

    def __aiter__(self) -> AsyncIterator[ProviderEvent]: ...


class ChatProvider(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AbstractAsyncContextManager[ChatStream]: ...

    async def aclose(self) -> None: ...
