"""A loopback Anthropic Messages API: `FakeUpstream` speaking Anthropic's streaming events.

The stream, as Anthropic sends it: `message_start` (the message, its id and the input usage),
`content_block_start`, a `ping`, `content_block_delta`s with `text_delta`s, `content_block_stop`,
`message_delta` (stop reason and the cumulative output usage), `message_stop`. Every event has an
`event:` line naming its type. The scenario's `finish_reason` "stop" is `end_turn`, "length"
`max_tokens`; its mid-stream error event is `overloaded_error`; `comment_lines` sends `ping`s
between events. Errors before the stream are `{"type": "error", "error": {...}}` with 529 for
"overloaded"; the key travels as a bearer token (or in `x-api-key`); `request-id` names the
request.

    python -m tests.fakes.anthropic_server --port 8102 --tokens 200
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from tests.fakes.upstream import (
    _REASONS,
    FakeUpstream,
    RecordedRequest,
    Scenario,
    command_line,
    new_request_id,
    scenario_of,
    serve_forever,
)

MESSAGES_PATH = "/v1/messages"
DEFAULT_MODEL = "claude-haiku-4-5"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_REASONS.setdefault(529, "Site Overloaded")


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class _Encoder:
    def __init__(self, model: str, input_tokens: int) -> None:
        self.request_id = new_request_id()
        self.message_id = f"msg_{uuid.uuid4().hex[:24]}"
        self._model = model
        self._input_tokens = input_tokens

    def headers(self) -> list[str]:
        return [f"request-id: {self.request_id}", "anthropic-organization-id: org-fake"]

    def start(self) -> bytes:
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        return (
            _event("message_start", {"type": "message_start", "message": message})
            + _event("content_block_start", block)
            + _event("ping", {"type": "ping"})
        )

    def content(self, text: str, finish_reason: str | None) -> bytes:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return _event("content_block_delta", delta)

    def end(self, finish_reason: str, usage: dict[str, int] | None) -> bytes:
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS.get(finish_reason, finish_reason),
                "stop_sequence": None,
            },
        }
        if usage is not None:
            delta["usage"] = {"output_tokens": usage["completion_tokens"]}
        else:
            delta["usage"] = {}
        return _event("content_block_stop", {"type": "content_block_stop", "index": 0}) + _event(
            "message_delta", delta
        )

    def done(self) -> bytes:
        return _event("message_stop", {"type": "message_stop"})

    def error(self) -> bytes:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return _event("error", error)

    def comment(self) -> bytes:
        return _event("ping", {"type": "ping"})


class FakeAnthropic(FakeUpstream):
    chat_path: ClassVar[str] = MESSAGES_PATH
    name: ClassVar[str] = "fake anthropic"
    request_id_header: ClassVar[str] = "request-id"

    def _authorized(self, record: RecordedRequest) -> bool:
        # The SDK sends the key as a bearer token; curl and older clients as `x-api-key`.
        return super()._authorized(record) or record.headers.get("x-api-key") == self.api_key

    def _encoder(self, record: RecordedRequest, scenario: Scenario) -> _Encoder:
        model = str(record.body.get("model", DEFAULT_MODEL))
        return _Encoder(model, self._prompt_tokens(record, scenario))

    def _error_payload(
        self, status: int, scenario: Scenario | None, message: str | None
    ) -> dict[str, Any]:
        error_type = _ERROR_TYPES.get(status, "api_error")
        default = _REASONS.get(status, "Error")
        if scenario is not None:
            error_type = scenario.error_type or scenario.error_code or error_type
            default = scenario.error_message or default
        return {"type": "error", "error": {"type": error_type, "message": message or default}}

    def _complete_payload(
        self, record: RecordedRequest, text: str, finish_reason: str | None, usage: dict[str, int]
    ) -> tuple[dict[str, Any], str]:
        payload = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": str(record.body.get("model", DEFAULT_MODEL)),
            "content": [{"type": "text", "text": text}],
            "stop_reason": STOP_REASONS.get(finish_reason or "stop"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
            },
        }
        return payload, new_request_id()


def main(argv: Sequence[str] | None = None) -> None:
    args = command_line("A loopback server speaking Anthropic's Messages API.", argv)
    fake = FakeAnthropic(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        default_scenario=scenario_of(args),
        record_requests=False,
    )
    asyncio.run(serve_forever(fake))


if __name__ == "__main__":
    main()
