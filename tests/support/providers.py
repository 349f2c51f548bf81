"""Every provider with its loopback fake, for suites that run unchanged against each of them.

A `ProviderCase` names a fake server (a wire format, and for OpenAI-compatible servers a flavour
of it) and how to build the real provider, through its real SDK, pointed at that fake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.llm.anthropic import AnthropicProvider
from app.llm.base import ChatMessage, ChatRequest, ErrorKind, Finish, ProviderError, TextDelta
from app.llm.groq import GroqProvider
from app.llm.openai import OpenAIProvider
from app.llm.sdk import ProviderOptions, SdkProvider
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.groq_server import FakeGroq
from tests.fakes.openai_server import FakeOpenAI, Flavor
from tests.fakes.upstream import FakeUpstream

API_KEY = "sk_unit_test_key_do_not_leak"


@dataclass(frozen=True)
class ProviderCase:
    id: str
    provider_name: str  # the provider's `name`, and its catalogue `provider`
    model: str  # a catalogue model of that provider
    new_fake: Callable[[], FakeUpstream]
    # (base URL of the fake, API key or None, options) -> the provider under test
    build: Callable[[str, str | None, ProviderOptions], SdkProvider]
    # The wire format's mid-stream error event: the kind it becomes, a word of its message.
    midstream_error: tuple[ErrorKind, str]
    needs_key: bool = True

    def provider(self, fake: FakeUpstream, **options: Any) -> SdkProvider:
        api_key = options.pop("api_key", API_KEY if self.needs_key else None)
        base_url = options.pop("base_url", fake.base_url)
        return self.build(base_url, api_key, ProviderOptions(**options))


def _openai(flavor: Flavor, *, needs_key: bool = True) -> ProviderCase:
    return ProviderCase(
        id=flavor,
        provider_name="openai",
        model="gpt-4o-mini",
        new_fake=lambda: FakeOpenAI(flavor=flavor, api_key=API_KEY),
        build=lambda url, key, options: OpenAIProvider(
            api_key=key, base_url=f"{url}/v1", options=options
        ),
        midstream_error=("upstream_error", "server_error"),
        needs_key=needs_key,
    )


GROQ = ProviderCase(
    id="groq",
    provider_name="groq",
    model="llama-3.1-8b-instant",
    new_fake=lambda: FakeGroq(api_key=API_KEY),
    build=lambda url, key, options: GroqProvider(api_key=key, base_url=url, options=options),
    midstream_error=("upstream_error", "internal_server_error"),
)
ANTHROPIC = ProviderCase(
    id="anthropic",
    provider_name="anthropic",
    model="claude-haiku-4-5",
    new_fake=lambda: FakeAnthropic(api_key=API_KEY),
    build=lambda url, key, options: AnthropicProvider(api_key=key, base_url=url, options=options),
    midstream_error=("overloaded_error", "overloaded"),
)
OPENAI = _openai("openai")
CASES = (
    GROQ,
    OPENAI,
    _openai("ollama", needs_key=False),
    _openai("vllm"),
    _openai("llamacpp"),
    ANTHROPIC,
)


@dataclass
class Outcome:
    deltas: list[str]
    finish: Finish | None
    error: ProviderError | None
    request_id: str | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def request(model: str, max_tokens: int = 256, temperature: float | None = 0.2) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[
            ChatMessage("system", "You are terse."),
            ChatMessage("user", "Say hello."),
            ChatMessage("assistant", "Hello."),
            ChatMessage("user", "Again, to the world."),
        ],
        max_tokens=max_tokens,
        temperature=temperature,
    )


async def collect(provider: SdkProvider, chat: ChatRequest) -> Outcome:
    """Run one stream to its end, checking the protocol's shape on the way."""
    deltas: list[str] = []
    finish: Finish | None = None
    error: ProviderError | None = None
    async with provider.stream(chat) as stream:
        try:
            async for event in stream:
                assert finish is None, "nothing may follow Finish"
                if isinstance(event, TextDelta):
                    assert event.text, "deltas are never empty"
                    deltas.append(event.text)
                else:
                    finish = event
        except ProviderError as exc:
            error = exc
        request_id = stream.request_id
    assert (finish is None) != (error is None), "a stream ends with a Finish or an error"
    if error is not None:
        assert API_KEY not in error.message
        assert len(error.message) < 120
    return Outcome(deltas, finish, error, request_id)
