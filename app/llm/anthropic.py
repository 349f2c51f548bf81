"""Anthropic's Messages API through the official SDK (`AsyncAnthropic`), read as raw bytes.

The request: the system prompt goes in `system`; the turns alternate as the API requires, so
consecutive turns of one role are joined (blank-line separated) and empty ones left out. The
SDK no longer offers sampling parameters, so a reply's `temperature` is not sent.

The stream: `message_start` names the message and carries the input usage; `content_block_delta`
events with `text_delta`s carry the text; `message_delta` the stop reason and the cumulative
output usage; `message_stop` ends it. `ping`, `content_block_start`/`stop` and other block
types (thinking, tool use) carry nothing for us. An `error` event (`overloaded_error`, ...)
fails the attempt, which is retried only while no text has been sent.

Retries, deadlines and errors are `app.llm.sdk`'s (529 is Anthropic's "overloaded"). The seam:
pass `client` (an `AsyncAnthropic`) and it is used as it is, with its retries turned off.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import anthropic
import httpx2
import orjson
from anthropic.types import MessageParam

from app.config import Settings
from app.llm.base import ChatMessage, ChatRequest, Finish, ProviderError, StopReason, Usage
from app.llm.sdk import (
    AttemptFailed,
    ProviderOptions,
    SdkErrors,
    SdkProvider,
    SdkResponse,
    SseLines,
    incomplete,
    safe_code,
    unreadable,
)

ERRORS = SdkErrors(
    status=anthropic.APIStatusError,
    timeout=anthropic.APITimeoutError,
    connection=anthropic.APIConnectionError,
    http=httpx2.HTTPError,
    http_timeout=httpx2.TimeoutException,
    pool_timeout=httpx2.PoolTimeout,
    connect_timeout=httpx2.ConnectTimeout,
)
# Sent when no key is configured (a gateway at ANTHROPIC_BASE_URL that authenticates otherwise).
NO_KEY = "not-needed"
LABEL = "Anthropic"

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "model_context_window_exceeded": "max_tokens",
}
_INPUT_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Error types a new attempt cannot fix.
_FINAL_ERRORS = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "billing_error",
    }
)


def messages_param(messages: Sequence[ChatMessage]) -> tuple[str | None, list[MessageParam]]:
    """The `system` text and the alternating turns the Messages API accepts."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content.strip())
    turns: list[tuple[str, list[str]]] = []
    for message in messages:
        if message.role == "system" or not message.content.strip():
            continue  # the API refuses empty text blocks (a reply cancelled before its text)
        if turns and turns[-1][0] == message.role:
            turns[-1][1].append(message.content)
        else:
            turns.append((message.role, [message.content]))
    params: list[MessageParam] = []
    for role, parts in turns:
        content = "\n\n".join(parts)
        params.append(
            {"role": "assistant", "content": content}
            if role == "assistant"
            else {"role": "user", "content": content}
        )
    return system or None, params


class MessagesParser:
    """A `StreamParser` for Anthropic's Messages stream."""

    __slots__ = (
        "_input",
        "_lines",
        "_output",
        "done",
        "request_id",
        "stop_reason",
        "stop_sequence",
    )

    def __init__(self) -> None:
        self._lines = SseLines(LABEL)
        self.done = False
        self.request_id: str | None = None
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self._input: int | None = None
        self._output: int | None = None

    @property
    def complete(self) -> bool:
        return self.stop_reason is not None

    def feed(self, data: bytes, texts: list[str]) -> None:
        for payload in self._lines.feed(data):
            text = self._event(payload)
            if text:
                texts.append(text)
            if self.done:
                break

    def _event(self, payload: bytes) -> str | None:
        try:
            event = orjson.loads(payload)
            kind = event["type"]
            if kind == "content_block_delta":
                delta = event["delta"]
                text = delta.get("text") if delta.get("type") == "text_delta" else None
                return text if isinstance(text, str) else None
            if kind == "message_start":
                message = event["message"]
                self.request_id = self.request_id or str(message.get("id") or "")[:128] or None
                self._usage(message.get("usage"), final=False)
            elif kind == "message_delta":
                delta = event.get("delta") or {}
                if reason := delta.get("stop_reason"):
                    self.stop_reason = str(reason)
                sequence = delta.get("stop_sequence")
                self.stop_sequence = sequence if isinstance(sequence, str) else None
                self._usage(event.get("usage"), final=True)
            elif kind == "message_stop":
                self.done = True
            elif kind == "error":
                raise _stream_error(event.get("error"))
            return None
        except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError):
            raise unreadable(LABEL) from None

    def _usage(self, usage: Any, *, final: bool) -> None:
        if not isinstance(usage, dict):
            return
        # The prompt's size is what was read from the cache, written to it, and neither.
        parts = [usage.get(key) for key in _INPUT_USAGE]
        if isinstance(parts[0], int):
            self._input = sum(part for part in parts if isinstance(part, int))
        output = usage.get("output_tokens")
        # message_start's output count is a placeholder; message_delta's is cumulative.
        if final and isinstance(output, int):
            self._output = output

    def finish(self) -> Finish:
        if self.stop_reason is None:
            raise incomplete(LABEL)
        usage = None
        if self._input is not None and self._output is not None:
            usage = Usage(input_tokens=self._input, output_tokens=self._output)
        stop = _STOP_REASONS.get(self.stop_reason, "end_turn")
        return Finish(stop, usage, self.stop_sequence if stop == "stop_sequence" else None)


def _stream_error(error: Any) -> AttemptFailed:
    error_type = error.get("type") if isinstance(error, dict) else None
    code = safe_code(error_type)
    if error_type == "overloaded_error":
        failure = ProviderError(
            f"{LABEL} is overloaded (overloaded_error)", kind="overloaded_error"
        )
    elif error_type == "rate_limit_error":
        failure = ProviderError(f"{LABEL}'s rate limit was reached", kind="rate_limit_error")
    elif code:
        failure = ProviderError(f"{LABEL} reported an error mid-stream ({code})")
    else:
        failure = ProviderError(f"{LABEL} reported an error")
    return AttemptFailed(failure, retryable=error_type not in _FINAL_ERRORS)


class _AnthropicWire:
    label = LABEL
    errors = ERRORS
    request_id_headers: tuple[str, ...] = ("request-id", "x-request-id")
    overloaded_statuses = frozenset({529, 503})

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self._messages = client.messages

    def open(self, request: ChatRequest) -> AbstractAsyncContextManager[SdkResponse]:
        system, messages = messages_param(request.messages)
        response = self._messages.with_streaming_response.create(
            model=request.model,
            max_tokens=request.max_tokens,
            messages=messages,
            system=system if system is not None else anthropic.omit,
            stream=True,
        )
        return cast("AbstractAsyncContextManager[SdkResponse]", response)

    def parser(self) -> MessagesParser:
        return MessagesParser()


class AnthropicProvider(SdkProvider):
    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        options: ProviderOptions | None = None,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        options = options or ProviderOptions()
        owned = client is None
        if client is None:
            client = anthropic.AsyncAnthropic(
                api_key=api_key or NO_KEY,
                base_url=base_url,
                http_client=options.httpx2_client(
                    anthropic.DefaultAioHttpClient, anthropic.DefaultAsyncHttpxClient
                ),
            )
        client = client.with_options(max_retries=0, timeout=options.httpx2_timeout)
        super().__init__(
            _AnthropicWire(client), options.policy, close=client.close if owned else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AnthropicProvider:
        key = settings.anthropic_api_key
        return cls(
            api_key=key.get_secret_value() if key is not None else None,
            base_url=settings.anthropic_base_url,
            options=ProviderOptions.from_settings(settings),
        )
