"""What only Groq does, through the real `groq` SDK against the fake Groq (the shared behaviour
is tests/unit/test_providers.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import groq
import httpx
import pytest

from app.config import Settings
from app.llm.base import ChatMessage, ChatRequest, Finish, Usage
from app.llm.groq import GroqProvider
from app.llm.sdk import ProviderOptions
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.providers import API_KEY, GROQ, collect, request

MODEL = GROQ.model
TOKENS = ["Hel", "lo", "!"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGroq]:
    async with FakeGroq(api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def provider(fake: FakeGroq) -> AsyncIterator[GroqProvider]:
    provider = GroqProvider(
        api_key=API_KEY, base_url=fake.base_url, options=ProviderOptions(retry_max_wait=0.05)
    )
    yield provider
    await provider.aclose()


async def test_sends_model_messages_limits_and_credentials(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    chat = request(MODEL)
    await collect(provider, chat)

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/openai/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == MODEL
    assert sent.body["messages"] == [{"role": m.role, "content": m.content} for m in chat.messages]
    assert sent.body["max_completion_tokens"] == chat.max_tokens
    assert sent.body["temperature"] == chat.temperature
    assert sent.body["stream"] is True


async def test_leaves_temperature_to_groq_when_unset(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    await collect(provider, ChatRequest(MODEL, [ChatMessage("user", "hi")], max_tokens=16))

    assert "temperature" not in fake.requests[0].body


@pytest.mark.parametrize(
    ("placement", "expected"),
    [("x_groq", Usage(42, 7)), ("usage", Usage(42, 7)), ("none", None)],
)
async def test_usage_from_x_groq_then_top_level_else_none(
    fake: FakeGroq, provider: GroqProvider, placement: Any, expected: Usage | None
) -> None:
    fake.enqueue(
        Scenario(tokens=TOKENS, usage_placement=placement, prompt_tokens=42, completion_tokens=7)
    )

    outcome = await collect(provider, request(MODEL))

    assert outcome.finish == Finish("end_turn", expected)


async def test_request_id_falls_back_to_x_groq_id(fake: FakeGroq, provider: GroqProvider) -> None:
    fake.enqueue(Scenario(send_request_id_header=False))

    outcome = await collect(provider, request(MODEL))

    assert outcome.request_id == fake.requests[0].request_id


async def test_done_without_finish_reason_ends_the_turn(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, finish_reason=None))

    outcome = await collect(provider, request(MODEL))

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish == Finish("end_turn", None)


async def test_flex_tier_out_of_capacity_is_overloaded(fake: FakeGroq) -> None:
    provider = GroqProvider(
        api_key=API_KEY, base_url=fake.base_url, options=ProviderOptions(max_retries=0)
    )
    fake.enqueue(Scenario(status=498))
    try:
        outcome = await collect(provider, request(MODEL))
    finally:
        await provider.aclose()

    assert outcome.error is not None
    assert outcome.error.kind == "overloaded_error"


async def test_from_settings(fake: FakeGroq) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        llm_provider="groq",
        groq_api_key=API_KEY,
        groq_base_url=fake.base_url,
        llm_max_retries=0,
        llm_max_connections=3,
    )
    provider = GroqProvider.from_settings(settings)
    try:
        outcome = await collect(provider, request(MODEL))
    finally:
        await provider.aclose()

    assert provider.name == "groq"
    assert outcome.finish is not None
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_a_client_passed_in_is_used_and_left_open(fake: FakeGroq) -> None:
    seen: list[str] = []

    async def note(request: httpx.Request) -> None:
        seen.append(request.url.path)

    http = httpx.AsyncClient(event_hooks={"request": [note]})
    client = groq.AsyncGroq(api_key=API_KEY, base_url=fake.base_url, http_client=http)
    provider = GroqProvider(client=client)
    outcome = await collect(provider, request(MODEL))
    await provider.aclose()

    assert outcome.finish is not None
    assert seen == ["/openai/v1/chat/completions"]
    assert not http.is_closed  # the caller's to close
    await client.close()
