"""What only the OpenAI provider does: the request it sends to OpenAI and to compatible servers
(the shared behaviour is tests/unit/test_providers.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai
import pytest

from app.config import Settings
from app.llm.openai import NO_KEY, OpenAIProvider, length_field
from app.llm.sdk import ProviderOptions
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.upstream import Scenario
from tests.support.providers import API_KEY, OPENAI, collect, request

MODEL = OPENAI.model


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


async def test_sends_messages_usage_request_and_credentials(fake: FakeOpenAI) -> None:
    provider = OpenAIProvider(api_key=API_KEY, base_url=f"{fake.base_url}/v1")
    chat = request(MODEL)
    try:
        await collect(provider, chat)
    finally:
        await provider.aclose()

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["messages"] == [{"role": m.role, "content": m.content} for m in chat.messages]
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == chat.temperature
    # Not api.openai.com: the field every compatible server reads.
    assert sent.body["max_tokens"] == chat.max_tokens
    assert "max_completion_tokens" not in sent.body


@pytest.mark.parametrize(
    ("base_url", "field"),
    [
        ("https://api.openai.com/v1", "max_completion_tokens"),
        ("http://localhost:11434/v1", "max_tokens"),
        ("http://vllm.internal:8000/v1", "max_tokens"),
        ("https://openrouter.ai/api/v1", "max_tokens"),
    ],
)
def test_the_length_field_follows_the_server(base_url: str, field: str) -> None:
    assert length_field(base_url) == field


async def test_a_server_that_needs_no_key_gets_a_placeholder(fake: FakeOpenAI) -> None:
    fake.api_key = None
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        llm_provider="openai",
        openai_base_url=f"{fake.base_url}/v1",
    )
    assert settings.openai_api_key is None
    provider = OpenAIProvider.from_settings(settings)
    try:
        outcome = await collect(provider, request(MODEL))
    finally:
        await provider.aclose()

    assert outcome.finish is not None
    assert fake.requests[0].headers["authorization"] == f"Bearer {NO_KEY}"


async def test_a_client_passed_in_is_used_with_our_retries_only(fake: FakeOpenAI) -> None:
    http = httpx2.AsyncClient()
    client = openai.AsyncOpenAI(
        api_key=API_KEY, base_url=f"{fake.base_url}/v1", http_client=http, max_retries=5
    )
    provider = OpenAIProvider(client=client, options=ProviderOptions(max_retries=0))
    fake.enqueue(Scenario(status=500), Scenario())
    outcome = await collect(provider, request(MODEL))
    await provider.aclose()

    assert outcome.error is not None  # the SDK's five retries were turned off
    assert len(fake.requests) == 1
    assert not http.is_closed  # the caller's to close
    await client.close()
