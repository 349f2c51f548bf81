"""Every provider at once on one live server: a conversation's model picks its provider, and each
provider's reply streams end to end over SSE and GraphQL with the same events, the same faults
and the same stored metadata. Each provider is its real SDK talking to its loopback fake."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.llm.models import get_model
from tests.conftest import every_provider
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.groq_server import FakeGroq
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.upstream import FakeUpstream, Scenario, deterministic_tokens
from tests.support.api import Api, User
from tests.support.streams import Transport, transports, wait_until

TIMEOUT = 1.0
# provider -> (a model of it, the fake it talks to)
PROVIDERS = {
    "groq": ("llama-3.1-8b-instant", "fake_groq"),
    "openai": ("gpt-4o-mini", "fake_openai"),
    "anthropic": ("claude-haiku-4-5", "fake_anthropic"),
}


@pytest.fixture(scope="module")
def server_settings(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> dict[str, Any]:
    return {
        **every_provider(fake_openai, fake_anthropic),
        "llm_provider": "openai",
        "llm_timeout_seconds": TIMEOUT,
        "llm_retry_max_wait_seconds": 0.5,
        "stream_checkpoint_seconds": 0.2,
    }


@pytest.fixture(params=list(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def model(provider: str) -> str:
    return PROVIDERS[provider][0]


@pytest.fixture
def fakes(
    fake_groq: FakeGroq, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> dict[str, FakeUpstream]:
    return {"groq": fake_groq, "openai": fake_openai, "anthropic": fake_anthropic}


@pytest.fixture
def fake(provider: str, fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes[provider]


@pytest.fixture(params=["sse", "graphql-transport-ws"])
def transport(request: pytest.FixtureRequest, api: Api) -> Transport:
    return transports(api.http, api.ws_url)[request.param]


async def settled(api: Api, user: User, conversation_id: str) -> list[dict[str, Any]]:
    async def no_reply_in_progress() -> bool:
        rows = await api.messages(user, conversation_id)
        return all(row["finish_reason"] is not None for row in rows if row["role"] == "assistant")

    await wait_until(no_reply_in_progress, timeout=5)
    return await api.messages(user, conversation_id)


async def conversation(api: Api, model: str, **fields: Any) -> tuple[User, str]:
    user = await api.register()
    created = await api.create_conversation(user, model=model, **fields)
    return user, str(created["id"])


async def test_each_providers_reply_streams_and_is_stored_with_its_metadata(
    api: Api,
    provider: str,
    model: str,
    fake: FakeUpstream,
    fakes: dict[str, FakeUpstream],
    transport: Transport,
) -> None:
    user, conversation_id = await conversation(api, model, system_prompt="You are terse.")
    tokens = ["Hel", "lo", ",", " wor", "ld", "!"]
    fake.enqueue(
        Scenario(tokens=tokens, token_interval=0.01, prompt_tokens=42, completion_tokens=6)
    )

    result = await transport.stream(user, conversation_id, "Say hello", max_tokens=100)

    assert result.error is None, result.error
    assert result.text == "".join(tokens)
    assert result.first("message_start")["model"] == model
    delta = result.first("message_delta")
    assert (delta["stop_reason"], delta["output_tokens"]) == ("end_turn", 6)
    [upstream] = fake.requests
    assert upstream.body["model"] == model
    for name, other in fakes.items():
        assert other.requests == [] or name == provider  # the conversation's provider answered
    system = upstream.body.get("system")
    messages = upstream.body["messages"]
    if provider == "anthropic":
        assert system == "You are terse."
        assert messages == [{"role": "user", "content": "Say hello"}]
    else:
        assert messages[0] == {"role": "system", "content": "You are terse."}
    rows = await settled(api, user, conversation_id)
    answer = rows[-1]
    assert (answer["content"], answer["finish_reason"]) == (result.text, "end_turn")
    metadata = answer["metadata"]
    assert metadata["provider"] == provider
    assert metadata["provider_request_id"] == upstream.request_id
    assert (metadata["input_tokens"], metadata["output_tokens"]) == (42, 6)
    assert metadata["time_to_first_token_ms"] is not None
    assert metadata["cost_usd"] == pytest.approx(get_model(model).cost_usd(42, 6))
    assert metadata["cost_usd"] > 0


async def test_the_models_query_lists_every_configured_provider(api: Api) -> None:
    user = await api.register()
    data = await api.gql("query { models { id provider } }", user=user)
    providers = {row["provider"] for row in data["models"]}
    assert providers == {"groq", "openai", "anthropic", "echo"}
    ids = {row["id"] for row in data["models"]}
    assert {model for model, _ in PROVIDERS.values()} <= ids


async def test_new_conversations_take_the_default_providers_model(api: Api) -> None:
    user = await api.register()
    created = await api.create_conversation(user)
    assert created["model"] == "gpt-4o-mini"  # LLM_PROVIDER=openai


# --- the same faults, the same outcomes, for every provider ---------------------------------


async def test_a_dropped_stream_stores_the_partial_reply_as_error(
    api: Api, model: str, fake: FakeUpstream
) -> None:
    user, conversation_id = await conversation(api, model)
    fake.enqueue(Scenario(n_tokens=10, token_interval=0.01, drop_after=3))

    result = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "Break")

    assert result.text == "".join(deterministic_tokens(3))
    assert result.error is not None and result.error["kind"] == "upstream_error"
    assert len(fake.requests) == 1
    rows = await settled(api, user, conversation_id)
    assert (rows[-1]["finish_reason"], rows[-1]["content"]) == ("error", result.text)


async def test_an_error_event_mid_stream_is_an_error_event(
    api: Api, provider: str, model: str, fake: FakeUpstream
) -> None:
    user, conversation_id = await conversation(api, model)
    fake.enqueue(Scenario(n_tokens=10, token_interval=0.01, error_chunk_after=3))

    result = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "Break")

    assert result.text == "".join(deterministic_tokens(3))
    expected = "overloaded_error" if provider == "anthropic" else "upstream_error"
    assert result.error is not None and result.error["kind"] == expected
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["finish_reason"] == "error"


@pytest.mark.parametrize(
    ("failure", "kind"),
    # Advised waits of 0: three attempts fit in the first token's deadline whatever the jitter.
    [
        (Scenario(status=500, retry_after="0"), "upstream_error"),
        (Scenario(status=429, retry_after="0"), "rate_limit_error"),
    ],
    ids=["500", "429"],
)
async def test_failures_before_the_first_token_are_retried_then_reported(
    api: Api, model: str, fake: FakeUpstream, failure: Scenario, kind: str
) -> None:
    user, conversation_id = await conversation(api, model)
    fake.enqueue(failure, failure, failure)  # LLM_MAX_RETRIES=2: three attempts

    result = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "Hi?")

    assert result.types[0] == "message_start"
    assert result.error is not None and result.error["kind"] == kind
    assert len(fake.requests) == 3
    rows = await settled(api, user, conversation_id)
    assert (rows[-1]["finish_reason"], rows[-1]["content"]) == ("error", "")


async def test_a_retry_that_succeeds_is_one_reply(api: Api, model: str, fake: FakeUpstream) -> None:
    user, conversation_id = await conversation(api, model)
    fake.enqueue(Scenario(status=503), Scenario(tokens=["fine"]))

    result = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "Again")

    assert (result.error, result.text) == (None, "fine")
    assert len(fake.requests) == 2
    rows = await settled(api, user, conversation_id)
    assert [row["finish_reason"] for row in rows] == [None, "end_turn"]


async def test_a_hung_model_fails_the_reply_after_one_timeout(
    api: Api, model: str, fake: FakeUpstream, transport: Transport
) -> None:
    user, conversation_id = await conversation(api, model)
    fake.enqueue(*[Scenario(hang_after=0)] * 3)

    started = time.monotonic()
    result = await transport.stream(user, conversation_id, "Anyone there?")
    elapsed = time.monotonic() - started

    assert result.error is not None
    assert result.error.get("kind", result.error.get("code")) in {"timeout_error", "UPSTREAM_ERROR"}
    assert len(fake.requests) == 1  # no retry after the deadline: it covers every attempt
    assert elapsed < 2 * TIMEOUT + 1  # not one timeout per attempt (three)
    await fake.wait_for_disconnect(0, timeout=2.0)
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["finish_reason"] == "error"


async def test_a_client_that_leaves_cancels_the_upstream(
    api: Api, model: str, fake: FakeUpstream, transport: Transport
) -> None:
    user, conversation_id = await conversation(api, model)
    fake.enqueue(Scenario(n_tokens=200, token_interval=0.05))

    result = await transport.stream(user, conversation_id, "A story", disconnect_after=3)

    assert len(result.deltas) == 3
    upstream = await fake.wait_for_disconnect(0, timeout=2.0)
    assert upstream.tokens_sent < 200
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["finish_reason"] == "cancelled"
    assert rows[-1]["content"] == upstream.text_sent[: len(rows[-1]["content"])]
