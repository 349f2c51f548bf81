"""OpenAI, or any server that speaks its Chat Completions API, through the official SDK.

`OPENAI_BASE_URL` points the SDK at Ollama (`http://localhost:11434/v1`), vLLM
(`http://host:8000/v1`), llama.cpp's server, LM Studio or OpenRouter; `OPENAI_API_KEY` may then be
left unset (the SDK insists on one, so a placeholder is sent). The stream asks for usage
(`stream_options.include_usage`): the provider's own counts when the server honours it, tiktoken's
otherwise. The length limit goes as `max_completion_tokens` to OpenAI itself (its reasoning
models refuse `max_tokens`) and as `max_tokens` elsewhere (what the compatible servers read).

Parsing is `app.llm.chat_completions`'s, retries, deadlines and errors `app.llm.sdk`'s. The seam:
pass `client` (an `AsyncOpenAI`) and it is used as it is, with its retries turned off.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Literal, cast
from urllib.parse import urlsplit

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from app.config import Settings
from app.llm.base import ChatMessage, ChatRequest
from app.llm.chat_completions import ChatCompletionsParser
from app.llm.sdk import ProviderOptions, SdkErrors, SdkProvider, SdkResponse

ERRORS = SdkErrors(
    status=openai.APIStatusError,
    timeout=openai.APITimeoutError,
    connection=openai.APIConnectionError,
    http=httpx2.HTTPError,
    http_timeout=httpx2.TimeoutException,
    pool_timeout=httpx2.PoolTimeout,
    connect_timeout=httpx2.ConnectTimeout,
)
# Sent when no key is configured: servers such as Ollama and vLLM ignore it.
NO_KEY = "not-needed"
LengthField = Literal["max_tokens", "max_completion_tokens"]


def length_field(base_url: str) -> LengthField:
    host = urlsplit(base_url).hostname or ""
    return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


class _OpenAIWire:
    label = "OpenAI"
    errors = ERRORS
    request_id_headers: tuple[str, ...] = ("x-request-id",)
    overloaded_statuses = frozenset({503})

    def __init__(self, client: openai.AsyncOpenAI, length: LengthField) -> None:
        self._completions = client.chat.completions
        self._length = length

    def open(self, request: ChatRequest) -> AbstractAsyncContextManager[SdkResponse]:
        create = self._completions.with_streaming_response.create
        messages = [_message_param(m) for m in request.messages]
        temperature = request.temperature if request.temperature is not None else openai.omit
        if self._length == "max_completion_tokens":
            response = create(
                model=request.model,
                messages=messages,
                max_completion_tokens=request.max_tokens,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
        else:
            response = create(
                model=request.model,
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
        return cast("AbstractAsyncContextManager[SdkResponse]", response)

    def parser(self) -> ChatCompletionsParser:
        return ChatCompletionsParser(self.label)


class OpenAIProvider(SdkProvider):
    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        options: ProviderOptions | None = None,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        options = options or ProviderOptions()
        owned = client is None
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=api_key or NO_KEY,
                base_url=base_url,
                http_client=options.httpx2_client(
                    openai.DefaultAioHttpClient, openai.DefaultAsyncHttpxClient
                ),
            )
        client = client.with_options(max_retries=0, timeout=options.httpx2_timeout)
        super().__init__(
            _OpenAIWire(client, length_field(str(client.base_url))),
            options.policy,
            close=client.close if owned else None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        key = settings.openai_api_key
        return cls(
            api_key=key.get_secret_value() if key is not None else None,
            base_url=settings.openai_base_url,
            options=ProviderOptions.from_settings(settings),
        )


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}
