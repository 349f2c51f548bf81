"""Groq through its official async SDK (`AsyncGroq`), reading the stream's raw bytes ourselves.

Groq speaks Chat Completions (`app.llm.chat_completions`) with its own extras: `x_groq.id` names
the request and `x_groq.usage` carries the usage on the final chunk; 498 means its flex tier is
out of capacity. Retries, deadlines and errors are `app.llm.sdk`'s.

The seam: pass `client` (an `AsyncGroq`, e.g. with your own `http_client`) and it is used as it
is, with its retries turned off; otherwise one is built on the SDK's aiohttp client (or httpx's
transport) with the pool and timeouts given. A passed client is the caller's to close.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import cast

import groq
import httpx
from groq.types.chat import ChatCompletionMessageParam

from app.config import Settings
from app.llm.base import ChatMessage, ChatRequest
from app.llm.chat_completions import ChatCompletionsParser
from app.llm.sdk import (
    ProviderOptions,
    SdkErrors,
    SdkProvider,
    SdkResponse,
    read_whole_buffers,
)

ERRORS = SdkErrors(
    status=groq.APIStatusError,
    timeout=groq.APITimeoutError,
    connection=groq.APIConnectionError,
    http=httpx.HTTPError,
    http_timeout=httpx.TimeoutException,
    pool_timeout=httpx.PoolTimeout,
    connect_timeout=httpx.ConnectTimeout,
)


class _GroqWire:
    label = "Groq"
    errors = ERRORS
    request_id_headers: tuple[str, ...] = ("x-request-id",)
    overloaded_statuses = frozenset({503, 498})  # 498: the flex tier is out of capacity

    def __init__(self, client: groq.AsyncGroq) -> None:
        self._completions = client.chat.completions

    def open(self, request: ChatRequest) -> AbstractAsyncContextManager[SdkResponse]:
        response = self._completions.with_streaming_response.create(
            model=request.model,
            messages=[_message_param(m) for m in request.messages],
            max_completion_tokens=request.max_tokens,
            temperature=request.temperature if request.temperature is not None else groq.omit,
            stream=True,
        )
        return cast("AbstractAsyncContextManager[SdkResponse]", response)

    def parser(self) -> ChatCompletionsParser:
        return ChatCompletionsParser(self.label)


class GroqProvider(SdkProvider):
    name = "groq"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        options: ProviderOptions | None = None,
        client: groq.AsyncGroq | None = None,
    ) -> None:
        options = options or ProviderOptions()
        # `read` bounds the wait for every next byte; `pool` the wait for a free connection, so
        # a saturated pool fails instead of queueing forever.
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        owned = client is None
        if client is None:
            client = groq.AsyncGroq(
                api_key=api_key, base_url=base_url, http_client=_http_client(options, timeout)
            )
        client = client.with_options(max_retries=0, timeout=timeout)
        super().__init__(_GroqWire(client), options.policy, close=client.close if owned else None)

    @classmethod
    def from_settings(cls, settings: Settings) -> GroqProvider:
        if settings.groq_api_key is None:
            raise ValueError("GROQ_API_KEY is required for the Groq provider")
        return cls(
            api_key=settings.groq_api_key.get_secret_value(),
            base_url=settings.groq_base_url,
            options=ProviderOptions.from_settings(settings),
        )


def _http_client(options: ProviderOptions, timeout: httpx.Timeout) -> httpx.AsyncClient:
    # groq's SDK is built on httpx (openai's and anthropic's on httpx2). Neither client passes a
    # transport, so both honour HTTPS_PROXY / NO_PROXY (httpx's mounts).
    n = options.max_connections
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    if options.http_client == "aiohttp":
        read_whole_buffers()
        return groq.DefaultAioHttpClient(timeout=timeout, limits=limits)
    return groq.DefaultAsyncHttpxClient(timeout=timeout, limits=limits)


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}
