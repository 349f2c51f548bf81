"""A loopback OpenAI Chat Completions server, with the habits of the servers that imitate it.

`FakeOpenAI(flavor=...)` streams as one of them does:

- `openai`: a role chunk, content chunks, a chunk with the finish reason and an empty delta, then,
  when the request asked for it (`stream_options.include_usage`), a usage chunk whose `choices` is
  empty; every other chunk carries `"usage": null`. `x-request-id` names the request.
- `ollama`: every delta repeats the role; the finish reason comes on a chunk with empty content;
  the usage chunk as OpenAI's; no request-id header, ids like `chatcmpl-123`; any key will do.
- `vllm`: the finish reason rides on the last content chunk; an empty-`choices` chunk without
  usage before the end; the usage chunk as OpenAI's.
- `llamacpp`: no role chunk; the usage (and llama.cpp's `timings`) on the finish chunk itself,
  whether asked for or not; no `[DONE]` when the scenario says so.

`Scenario.usage_placement="none"` (or a request without `include_usage`, except for llama.cpp)
sends no usage at all.

    python -m tests.fakes.openai_server --port 8101 --flavor ollama --tokens 200
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import orjson

from tests.fakes.groq_server import openai_error
from tests.fakes.upstream import (
    FakeUpstream,
    RecordedRequest,
    Scenario,
    command_line,
    new_request_id,
    scenario_of,
    serve_forever,
)

Flavor = Literal["openai", "ollama", "vllm", "llamacpp"]
FLAVORS: tuple[Flavor, ...] = ("openai", "ollama", "vllm", "llamacpp")
CHAT_PATH = "/v1/chat/completions"
DEFAULT_MODEL = "gpt-4o-mini"
_DONE = b"data: [DONE]\n\n"

_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "The request is invalid.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    404: ("invalid_request_error", "The model does not exist.", "model_not_found"),
    429: ("requests", "Rate limit reached for requests.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request.", None),
    503: ("server_error", "The engine is currently overloaded.", None),
}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _Encoder:
    def __init__(self, flavor: Flavor, model: str, include_usage: bool) -> None:
        self.flavor = flavor
        self.request_id = new_request_id()
        self.include_usage = include_usage
        ollama = flavor == "ollama"
        self._id = f"chatcmpl-{uuid.uuid4().int % 1000}" if ollama else f"chatcmpl-{uuid.uuid4()}"
        self._model = model
        self._created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": "fp_ollama" if self.flavor == "ollama" else "fp_fake",
            "choices": choices,
        }
        if self.include_usage and self.flavor == "openai":
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    @staticmethod
    def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def headers(self) -> list[str]:
        if self.flavor in ("ollama", "llamacpp"):
            return []
        return [f"x-request-id: {self.request_id}", "openai-processing-ms: 12"]

    def start(self) -> bytes:
        if self.flavor == "llamacpp":
            return b""
        delta: dict[str, Any] = {"role": "assistant", "content": ""}
        if self.flavor == "openai":
            delta["refusal"] = None
        return _event(self._chunk([self._choice(delta)]))

    def content(self, text: str, finish_reason: str | None) -> bytes:
        delta: dict[str, Any] = {"content": text}
        if self.flavor == "ollama":
            delta = {"role": "assistant", "content": text}
        if self.flavor == "vllm":
            return _event(self._chunk([self._choice(delta, finish_reason)]))
        return _event(self._chunk([self._choice(delta)]))

    def end(self, finish_reason: str, usage: dict[str, int] | None) -> bytes:
        full = None
        if usage is not None:
            full = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        if self.flavor == "llamacpp":
            extra: dict[str, Any] = {"timings": {"predicted_n": 1, "predicted_ms": 1.5}}
            if full is not None:
                extra["usage"] = full
            return _event(self._chunk([self._choice({}, finish_reason)], **extra))
        events = b""
        if self.flavor == "vllm":
            events += _event(self._chunk([]))  # an empty chunk, as vLLM sends before the usage
        elif self.flavor == "ollama":
            delta = {"role": "assistant", "content": ""}
            events += _event(self._chunk([self._choice(delta, finish_reason)]))
        else:
            events += _event(self._chunk([self._choice({}, finish_reason)]))
        if full is not None and self.include_usage:
            events += _event(self._chunk([], usage=full))
        return events

    def done(self) -> bytes:
        return _DONE

    def error(self) -> bytes:
        error = {"error": {"message": "The server had an error", "type": "server_error"}}
        return b"data: " + orjson.dumps(error) + b"\n\n"

    def comment(self) -> bytes:
        return b": keep-alive\n\n"


class FakeOpenAI(FakeUpstream):
    chat_path: ClassVar[str] = CHAT_PATH
    name: ClassVar[str] = "fake openai"

    def __init__(self, *, flavor: Flavor = "openai", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flavor = flavor

    def _authorized(self, record: RecordedRequest) -> bool:
        return self.flavor == "ollama" or super()._authorized(record)

    def _encoder(self, record: RecordedRequest, scenario: Scenario) -> _Encoder:
        body = record.body
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        model = str(body.get("model", DEFAULT_MODEL))
        return _Encoder(self.flavor, model, include_usage or self.flavor == "llamacpp")

    def _error_payload(
        self, status: int, scenario: Scenario | None, message: str | None
    ) -> dict[str, Any]:
        return openai_error(status, scenario, message, _OPENAI_ERRORS)

    def _complete_payload(
        self, record: RecordedRequest, text: str, finish_reason: str | None, usage: dict[str, int]
    ) -> tuple[dict[str, Any], str]:
        request_id = new_request_id()
        payload = {
            "id": f"chatcmpl-{uuid.uuid4()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(record.body.get("model", DEFAULT_MODEL)),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }
        return payload, request_id


def main(argv: Sequence[str] | None = None) -> None:
    parser_args = list(argv) if argv is not None else None
    flavor_parser = argparse.ArgumentParser(add_help=False)
    flavor_parser.add_argument("--flavor", choices=FLAVORS, default="openai")
    known, rest = flavor_parser.parse_known_args(parser_args)
    args = command_line("A loopback server speaking OpenAI's Chat Completions API.", rest)
    fake = FakeOpenAI(
        flavor=known.flavor,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        default_scenario=scenario_of(args),
        record_requests=False,
    )
    asyncio.run(serve_forever(fake))


if __name__ == "__main__":
    main()
