"""`echo`: a deterministic, offline provider for local runs and demos. It is not a language model.

The reply is built from the last user message, so the same prompt always streams the same words,
one delta per word, `ECHO_TOKEN_DELAY_SECONDS` apart. Usage is counted with tiktoken. Tests of
the real providers use loopback servers that speak their protocols (tests/fakes), never this.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.llm.base import (
    ChatRequest,
    ChatStream,
    Finish,
    ProviderEvent,
    StopReason,
    TextDelta,
    Usage,
)
from app.llm.tokens import count_tokens, prompt_tokens

_WORD = re.compile(r"\S+\s*")


def echo_reply(request: ChatRequest) -> str:
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    turns = sum(1 for m in request.messages if m.role == "user")
    return f"[echo] You said: {last_user.strip()} (turn {turns}; offline echo model, no LLM)"


class _EchoStream:
    def __init__(self, request: ChatRequest, delay: float) -> None:
        self._request = request
        self._delay = delay
        self.request_id: str | None = f"echo-{uuid.uuid4().hex[:16]}"

    async def __aiter__(self) -> AsyncIterator[ProviderEvent]:
        words = _WORD.findall(echo_reply(self._request))
        budget = self._request.max_tokens
        spent = 0  # word by word slightly overestimates, which keeps the budget check linear
        emitted: list[str] = []
        stop: StopReason = "end_turn"
        for word in words:
            spent += count_tokens(word)
            if spent > budget:
                stop = "max_tokens"
                break
            if self._delay:
                await asyncio.sleep(self._delay)
            emitted.append(word)
            yield TextDelta(word)
        messages = self._request.messages
        usage = Usage(
            input_tokens=prompt_tokens(count_tokens(m.content) for m in messages),
            output_tokens=count_tokens("".join(emitted)),
        )
        yield Finish(stop, usage)


class EchoProvider:
    name = "echo"

    def __init__(self, token_delay_seconds: float) -> None:
        self._delay = token_delay_seconds

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        yield _EchoStream(request, self._delay)

    async def aclose(self) -> None:
        return None
