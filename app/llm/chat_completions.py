"""The Chat Completions stream (`chat.completion.chunk` events), as OpenAI, Groq and the
OpenAI-compatible servers (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter) send it.

Tolerant of what those servers do differently: chunks whose `choices` is empty (the usage chunk
of `stream_options.include_usage`, vLLM's keep-alives), a `finish_reason` on a chunk that also
carries text or on a later one, usage on the final chunk, on a chunk of its own, in Groq's
`x_groq`, or nowhere, a `null` content, and a body that ends after the finish reason without
`data: [DONE]`.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.llm.base import Finish, ProviderError, StopReason, Usage
from app.llm.sdk import AttemptFailed, SseLines, incomplete, safe_code, unreadable

_STOP_REASONS: dict[str, StopReason] = {"stop": "end_turn", "length": "max_tokens"}


class ChatCompletionsParser:
    """A `StreamParser` for Chat Completions streams."""

    __slots__ = (
        "_label",
        "_lines",
        "_top_usage",
        "_x_groq_usage",
        "done",
        "finish_reason",
        "request_id",
    )

    def __init__(self, label: str) -> None:
        self._label = label
        self._lines = SseLines(label)
        self.done = False
        self.finish_reason: str | None = None
        self.request_id: str | None = None
        self._x_groq_usage: Usage | None = None
        self._top_usage: Usage | None = None

    @property
    def complete(self) -> bool:
        return self.finish_reason is not None

    def feed(self, data: bytes, texts: list[str]) -> None:
        for payload in self._lines.feed(data):
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
                raise self._stream_error(error)
            x_groq = event.get("x_groq")
            if self.request_id is None:
                groq_id = x_groq.get("id") if x_groq else None
                self.request_id = str(groq_id or event.get("id") or "")[:128] or None
            if x_groq and (usage := x_groq.get("usage")):
                self._x_groq_usage = _usage(usage)
            if usage := event.get("usage"):
                self._top_usage = _usage(usage) or self._top_usage
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
            raise unreadable(self._label) from None

    def _stream_error(self, error: Any) -> AttemptFailed:
        error_type = error.get("type") if isinstance(error, dict) else None
        label = safe_code(error_type)
        message = (
            f"{self._label} reported an error mid-stream ({label})"
            if label
            else f"{self._label} reported an error"
        )
        # A request the server calls invalid fails the same way again.
        return AttemptFailed(
            ProviderError(message), retryable=error_type != "invalid_request_error"
        )

    def finish(self) -> Finish:
        if self.finish_reason is None and not self.done:
            raise incomplete(self._label)
        stop_reason = _STOP_REASONS.get(self.finish_reason or "stop", "end_turn")
        return Finish(stop_reason, self._x_groq_usage or self._top_usage)


def _usage(raw: Any) -> Usage | None:
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(input_tokens=prompt, output_tokens=completion)
    return None
