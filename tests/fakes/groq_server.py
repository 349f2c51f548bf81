"""A loopback Groq: `FakeUpstream` speaking Groq's chat-completions wire protocol.

Tests point the real `groq` SDK at it and script each response with a `Scenario`:

    async with FakeGroq(api_key="test-key") as fake:
        fake.enqueue(Scenario(tokens=["Hel", "lo"]))        # FIFO; then `default_scenario`
        provider = GroqProvider(api_key="test-key", base_url=fake.base_url)
        ...
        assert fake.requests[0].body["model"] == "llama-3.1-8b-instant"

The wire format is Groq's: `data: {json}\\n\\n` chunk events sent with `Transfer-Encoding: chunked`,
a first chunk carrying the role and `x_groq.id`, content chunks, a final chunk with the finish
reason and usage in `x_groq.usage` (or top-level `usage`), then `data: [DONE]`.

Benchmarks run it as a separate process that serves the default scenario forever:

    python -m tests.fakes.groq_server --port 8100 --api-key K --tokens 200 --token-interval 0.01
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from tests.fakes.upstream import (
    _REASONS,
    FakeUpstream,
    FinishReason,
    HttpChunking,
    RecordedRequest,
    Scenario,
    UsagePlacement,
    _chunked,
    _Connection,
    command_line,
    deterministic_tokens,
    new_request_id,
    rough_prompt_tokens,
    scenario_of,
    serve_forever,
)

__all__ = [
    "CHAT_PATH",
    "DEFAULT_MODEL",
    "FakeGroq",
    "FinishReason",
    "HttpChunking",
    "RecordedRequest",
    "Scenario",
    "UsagePlacement",
    "_ChunkEncoder",
    "_Connection",
    "_chunked",
    "_rough_prompt_tokens",
    "_usage",
    "deterministic_tokens",
]

CHAT_PATH = "/openai/v1/chat/completions"
DEFAULT_MODEL = "llama-3.1-8b-instant"
FINGERPRINT = "fp_fake0groq"
_DONE = b"data: [DONE]\n\n"
_rough_prompt_tokens = rough_prompt_tokens

# (type, message, code) of Groq's error bodies, by status.
_GROQ_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "The request is invalid.", None),
    401: ("invalid_request_error", "Invalid API Key", "invalid_api_key"),
    404: ("invalid_request_error", "Unknown request URL.", "unknown_url"),
    413: ("invalid_request_error", "Request Entity Too Large", "request_too_large"),
    422: ("invalid_request_error", "The request could not be processed.", None),
    429: ("tokens", "Rate limit reached. Please try again later.", "rate_limit_exceeded"),
    500: ("internal_server_error", "Internal Server Error", None),
    503: ("internal_server_error", "Service Unavailable", None),
}


def openai_error(
    status: int, scenario: Scenario | None, message: str | None, errors: dict[int, Any]
) -> dict[str, Any]:
    """The `{"error": {"message", "type", "code"}}` body of Groq, OpenAI and their imitators."""
    error_type, default_message, code = errors.get(
        status, ("api_error", _REASONS.get(status, "Error"), None)
    )
    if scenario is not None:
        error_type = scenario.error_type or error_type
        default_message = scenario.error_message or default_message
        code = scenario.error_code or code
    error: dict[str, Any] = {"message": message or default_message, "type": error_type}
    if code is not None:
        error["code"] = code
    return {"error": error}


class _ChunkEncoder:
    """Groq's `chat.completion.chunk` events for one response, built from pre-encoded parts."""

    def __init__(self, model: str, x_groq_id: str) -> None:
        self.completion_id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.model = model
        self.x_groq_id = x_groq_id
        head = orjson.dumps(self._base())[:-1]  # without the closing brace
        self._content_prefix = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":'
        self._content_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    def role(self) -> bytes:
        event = self._base()
        event["choices"] = [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
        event["x_groq"] = {"id": self.x_groq_id}
        return b"data: " + orjson.dumps(event) + b"\n\n"

    def content(self, text: str) -> bytes:
        return self._content_prefix + orjson.dumps(text) + self._content_suffix

    def final(
        self, finish_reason: str, placement: UsagePlacement, usage: dict[str, Any] | None
    ) -> bytes:
        event = self._base()
        event["choices"] = [
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
        ]
        x_groq: dict[str, Any] = {"id": self.x_groq_id}
        if placement == "x_groq":
            x_groq["usage"] = usage
        elif placement == "usage":
            event["usage"] = usage
        event["x_groq"] = x_groq
        return b"data: " + orjson.dumps(event) + b"\n\n"


class _GroqEncoder:
    """`_ChunkEncoder` as the fake server's `Encoder`."""

    def __init__(self, model: str, placement: UsagePlacement) -> None:
        self.request_id = new_request_id()
        self._chunks = _ChunkEncoder(model, self.request_id)
        self._placement = placement

    def headers(self) -> list[str]:
        return [
            f"x-request-id: {self.request_id}",
            "x-ratelimit-limit-requests: 14400",
            "x-ratelimit-remaining-requests: 14399",
        ]

    def start(self) -> bytes:
        return self._chunks.role()

    def content(self, text: str, finish_reason: str | None) -> bytes:
        return self._chunks.content(text)

    def end(self, finish_reason: str, usage: dict[str, int] | None) -> bytes:
        full = _usage(usage["prompt_tokens"], usage["completion_tokens"]) if usage else None
        return self._chunks.final(finish_reason, self._placement, full)

    def done(self) -> bytes:
        return _DONE

    def error(self) -> bytes:
        error = {"error": {"message": "Internal Server Error", "type": "internal_server_error"}}
        return b"data: " + orjson.dumps(error) + b"\n\n"

    def comment(self) -> bytes:
        return b": keep-alive\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    completion_time = round(completion_tokens / 750, 6)
    return {
        "queue_time": 0.000_123,
        "prompt_tokens": prompt_tokens,
        "prompt_time": 0.000_456,
        "completion_tokens": completion_tokens,
        "completion_time": completion_time,
        "total_tokens": prompt_tokens + completion_tokens,
        "total_time": round(0.000_456 + completion_time, 6),
    }


class FakeGroq(FakeUpstream):
    chat_path: ClassVar[str] = CHAT_PATH
    name: ClassVar[str] = "fake groq"

    def _encoder(self, record: RecordedRequest, scenario: Scenario) -> _GroqEncoder:
        return _GroqEncoder(str(record.body.get("model", DEFAULT_MODEL)), scenario.usage_placement)

    def _error_payload(
        self, status: int, scenario: Scenario | None, message: str | None
    ) -> dict[str, Any]:
        return openai_error(status, scenario, message, _GROQ_ERRORS)

    def _complete_payload(
        self, record: RecordedRequest, text: str, finish_reason: str | None, usage: dict[str, int]
    ) -> tuple[dict[str, Any], str]:
        encoder = _ChunkEncoder(str(record.body.get("model", DEFAULT_MODEL)), new_request_id())
        payload: dict[str, Any] = {
            "id": encoder.completion_id,
            "object": "chat.completion",
            "created": encoder.created,
            "model": encoder.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": _usage(usage["prompt_tokens"], usage["completion_tokens"]),
            "system_fingerprint": FINGERPRINT,
            "x_groq": {"id": encoder.x_groq_id},
        }
        return payload, encoder.x_groq_id


def main(argv: Sequence[str] | None = None) -> None:
    args = command_line("A loopback server speaking Groq's streaming API.", argv)
    fake = FakeGroq(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        default_scenario=scenario_of(args),
        record_requests=False,
    )
    asyncio.run(serve_forever(fake))


if __name__ == "__main__":
    main()
