"""GroqProvider against the loopback fake Groq, through the real `groq` SDK and real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.config import Settings
from app.llm.base import ChatMessage, ChatRequest, Finish, ProviderError, TextDelta, Usage
from app.llm.groq import GroqProvider
from tests.fakes.groq_server import FakeGroq, Scenario, deterministic_tokens

API_KEY = "gsk_unit_test_key_do_not_leak"
MODEL = "llama-3.1-8b-instant"
REQUEST = ChatRequest(
    model=MODEL,
    messages=[
        ChatMessage("system", "You are terse."),
        ChatMessage("user", "Say hello."),
        ChatMessage("assistant", "Hello."),
        ChatMessage("user", "Again, to the world."),
    ],
    max_tokens=256,
    temperature=0.2,
)
TOKENS = ["Hel", "lo", ", ", "wörld", ' "quoted"\n', "🙂", "!"]

ProviderFactory = Callable[..., GroqProvider]


@dataclass
class Outcome:
    deltas: list[str]
    finish: Finish | None
    error: ProviderError | None
    request_id: str | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


async def collect(provider: GroqProvider, request: ChatRequest = REQUEST) -> Outcome:
    """Run one stream to its end, checking the protocol's shape on the way."""
    deltas: list[str] = []
    finish: Finish | None = None
    error: ProviderError | None = None
    async with provider.stream(request) as stream:
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


@pytest.fixture
async def fake() -> AsyncIterator[FakeGroq]:
    async with FakeGroq(api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def make_provider(fake: FakeGroq) -> AsyncIterator[ProviderFactory]:
    providers: list[GroqProvider] = []

    def make(**overrides: Any) -> GroqProvider:
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "base_url": fake.base_url,
            "connect_timeout": 2.0,
            "read_timeout": 5.0,
            "max_retries": 2,
            "retry_max_wait": 0.05,
            "max_connections": 50,
        }
        provider = GroqProvider(**(options | overrides))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: ProviderFactory) -> GroqProvider:
    return make_provider()


# --- successful streams ---


@pytest.mark.parametrize("token_interval", [0.0, 0.01])
async def test_streams_the_reply_with_usage_and_request_id(
    fake: FakeGroq, provider: GroqProvider, token_interval: float
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, token_interval=token_interval))

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish is not None
    assert outcome.finish.stop_reason == "end_turn"
    [sent] = fake.requests
    assert sent.usage is not None
    assert sent.usage["completion_tokens"] == len(TOKENS)
    assert outcome.finish.usage == Usage(sent.usage["prompt_tokens"], len(TOKENS))
    assert outcome.request_id == sent.request_id
    assert outcome.request_id is not None
    assert outcome.request_id.startswith("req_")
    if token_interval:
        assert outcome.deltas == TOKENS  # a reader that keeps up gets one delta per chunk


async def test_sends_model_messages_limits_and_credentials(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    await collect(provider)

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/openai/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == MODEL
    assert sent.body["messages"] == [
        {"role": m.role, "content": m.content} for m in REQUEST.messages
    ]
    assert sent.body["max_completion_tokens"] == REQUEST.max_tokens
    assert sent.body["temperature"] == REQUEST.temperature
    assert sent.body["stream"] is True


async def test_leaves_temperature_to_groq_when_unset(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    request = ChatRequest(MODEL, [ChatMessage("user", "hi")], max_tokens=16)

    await collect(provider, request)

    assert "temperature" not in fake.requests[0].body


async def test_chunks_that_arrive_together_become_one_delta(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    tokens = deterministic_tokens(40)
    fake.enqueue(Scenario(tokens=tokens, http_chunks="per_write"))

    outcome = await collect(provider)

    assert outcome.deltas == ["".join(tokens)]


@pytest.mark.parametrize("http_chunks", ["per_event", "per_write"])
async def test_parses_events_split_across_chunks_and_comment_lines(
    fake: FakeGroq, provider: GroqProvider, http_chunks: Any
) -> None:
    fake.enqueue(
        Scenario(tokens=TOKENS, fragment_events=True, comment_lines=True, http_chunks=http_chunks)
    )

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish is not None
    assert outcome.finish.usage is not None


async def test_length_finish_is_max_tokens(fake: FakeGroq, provider: GroqProvider) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, finish_reason="length"))

    outcome = await collect(provider)

    assert outcome.finish == Finish("max_tokens", Usage(fake.requests[0].usage["prompt_tokens"], 7))


async def test_groq_cuts_the_reply_at_max_tokens(fake: FakeGroq, provider: GroqProvider) -> None:
    fake.enqueue(Scenario(n_tokens=8))
    request = ChatRequest(MODEL, [ChatMessage("user", "Count.")], max_tokens=3)

    outcome = await collect(provider, request)

    assert fake.requests[0].body["max_completion_tokens"] == 3
    assert outcome.text == "".join(deterministic_tokens(3))
    assert outcome.finish is not None
    assert outcome.finish.stop_reason == "max_tokens"


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

    outcome = await collect(provider)

    assert outcome.finish == Finish("end_turn", expected)


async def test_request_id_falls_back_to_x_groq_id(fake: FakeGroq, provider: GroqProvider) -> None:
    fake.enqueue(Scenario(send_request_id_header=False))

    outcome = await collect(provider)

    assert outcome.request_id == fake.requests[0].request_id


async def test_done_without_finish_reason_ends_the_turn(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, finish_reason=None))

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish == Finish("end_turn", None)


async def test_a_body_that_ends_without_finish_or_done_is_a_failure(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, finish_reason=None, send_done=False))

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert len(fake.requests) == 1


async def test_sequential_streams_reuse_one_connection(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    for _ in range(3):
        assert (await collect(provider)).finish is not None

    assert fake.connection_count == 1


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
        outcome = await collect(provider)
    finally:
        await provider.aclose()

    assert provider.name == "groq"
    assert outcome.finish is not None
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


# --- retries: only before the first token ---


@pytest.mark.parametrize(("header", "value"), [("retry_after", "0.3"), ("retry_after_ms", "300")])
async def test_rate_limit_waits_as_advised_then_retries(
    fake: FakeGroq, make_provider: ProviderFactory, header: str, value: str
) -> None:
    provider = make_provider(retry_max_wait=1.0)
    fake.enqueue(Scenario(status=429, **{header: value}), Scenario(tokens=TOKENS))

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS)
    assert len(fake.requests) == 2
    first, second = fake.requests
    assert second.started_at - first.started_at >= 0.3


async def test_server_errors_exhaust_the_retries(
    fake: FakeGroq, make_provider: ProviderFactory
) -> None:
    provider = make_provider(max_retries=2)
    fake.enqueue(*[Scenario(status=500)] * 3)

    outcome = await collect(provider)

    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert "500" in outcome.error.message
    assert len(fake.requests) == 3
    assert outcome.request_id == fake.requests[-1].request_id


async def test_overloaded(fake: FakeGroq, make_provider: ProviderFactory) -> None:
    provider = make_provider(max_retries=1)
    fake.enqueue(Scenario(status=503), Scenario(status=503))

    outcome = await collect(provider)

    assert outcome.error is not None
    assert outcome.error.kind == "overloaded_error"
    assert len(fake.requests) == 2


async def test_rate_limit_on_every_attempt(fake: FakeGroq, make_provider: ProviderFactory) -> None:
    provider = make_provider(max_retries=1)
    fake.enqueue(*[Scenario(status=429, retry_after="0")] * 2)

    outcome = await collect(provider)

    assert outcome.error is not None
    assert outcome.error.kind == "rate_limit_error"
    assert outcome.error.retry_after == 0.0
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("header", "value", "seconds"), [("retry_after", "30", 30.0), ("retry_after_ms", "45000", 45.0)]
)
async def test_advised_wait_beyond_the_limit_is_not_waited_for(
    fake: FakeGroq, make_provider: ProviderFactory, header: str, value: str, seconds: float
) -> None:
    provider = make_provider(retry_max_wait=1.0)
    fake.enqueue(Scenario(status=429, **{header: value}))

    started = time.monotonic()
    outcome = await collect(provider)

    assert time.monotonic() - started < 1.0
    assert outcome.error is not None
    assert outcome.error.kind == "rate_limit_error"
    assert outcome.error.retry_after == seconds
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_client_errors_are_not_retried(
    fake: FakeGroq, provider: GroqProvider, status: int
) -> None:
    fake.enqueue(
        Scenario(
            status=status,
            error_code="model_not_found",
            error_message=f"upstream detail that mentions {API_KEY}",
        )
    )

    outcome = await collect(provider)

    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert str(status) in outcome.error.message
    assert "upstream detail" not in outcome.error.message
    assert len(fake.requests) == 1


async def test_a_wrong_api_key_is_not_retried(
    fake: FakeGroq, make_provider: ProviderFactory
) -> None:
    provider = make_provider(api_key="gsk_wrong_key")

    outcome = await collect(provider)

    assert outcome.error is not None
    assert "401" in outcome.error.message
    assert "gsk_wrong_key" not in outcome.error.message
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "failure",
    [
        Scenario(status=500),
        Scenario(status=502),
        Scenario(status=408),
        Scenario(status=429),
        Scenario(drop_after=0),
        Scenario(error_chunk_after=0),
        Scenario(invalid_json_after=0),
    ],
    ids=["500", "502", "408", "429", "dropped", "error-chunk", "invalid-json"],
)
async def test_failures_before_the_first_token_are_retried(
    fake: FakeGroq, provider: GroqProvider, failure: Scenario
) -> None:
    fake.enqueue(failure, Scenario(tokens=TOKENS))

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish is not None
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "pace",
    [
        {"token_interval": 0.01},
        {"token_interval": 0.0},
        # The text and the failure in one read: the text is still delivered, first.
        {"token_interval": 0.0, "http_chunks": "per_write"},
    ],
    ids=["paced", "burst", "one-chunk"],
)
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"drop_after": 3}, "cut off"),
        ({"error_chunk_after": 3}, "internal_server_error"),
        ({"invalid_json_after": 3}, "unreadable"),
    ],
    ids=["dropped", "error-chunk", "invalid-json"],
)
async def test_failures_after_text_end_the_stream_without_retry(
    fake: FakeGroq,
    provider: GroqProvider,
    fault: dict[str, int],
    message: str,
    pace: dict[str, Any],
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, **pace, **fault))

    outcome = await collect(provider)

    assert outcome.text == "".join(TOKENS[:3])
    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert message in outcome.error.message
    assert len(fake.requests) == 1
    assert fake.requests[0].tokens_sent == 3


async def test_silence_mid_stream_times_out_without_retry(
    fake: FakeGroq, make_provider: ProviderFactory
) -> None:
    provider = make_provider(read_timeout=0.5, max_retries=2)
    fake.enqueue(Scenario(tokens=TOKENS, hang_after=2))

    started = time.monotonic()
    outcome = await collect(provider)

    assert 0.5 <= time.monotonic() - started < 2.0
    assert outcome.text == "".join(TOKENS[:2])
    assert outcome.error is not None
    assert outcome.error.kind == "timeout_error"
    assert len(fake.requests) == 1
    await fake.wait_for_disconnect(0, timeout=1.0)


@pytest.mark.parametrize(
    "hang",
    [Scenario(hang_before_headers=True), Scenario(hang_after=0)],
    ids=["before-headers", "after-headers"],
)
async def test_silence_before_the_first_token_times_out_after_retries(
    fake: FakeGroq, make_provider: ProviderFactory, hang: Scenario
) -> None:
    provider = make_provider(read_timeout=0.4, max_retries=1)
    fake.enqueue(hang, hang)

    outcome = await collect(provider)

    assert outcome.error is not None
    assert outcome.error.kind == "timeout_error"
    assert len(fake.requests) == 2


async def test_connection_refused_is_an_upstream_error(make_provider: ProviderFactory) -> None:
    async with FakeGroq(api_key=API_KEY) as gone:
        base_url = gone.base_url  # a port nobody listens on once it is closed
    provider = make_provider(base_url=base_url, max_retries=1)

    outcome = await collect(provider)

    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"


# --- leaving early closes the upstream connection at once ---


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake: FakeGroq, provider: GroqProvider
) -> None:
    fake.enqueue(Scenario(n_tokens=200, token_interval=0.05))
    three_deltas = asyncio.Event()

    async def consume() -> None:
        count = 0
        async with provider.stream(REQUEST) as stream:
            async for _ in stream:
                count += 1
                if count == 3:
                    three_deltas.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_deltas.wait(), timeout=5)
    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task

    sent = await fake.wait_for_disconnect(0, timeout=1.0)
    assert sent.client_closed_at is not None
    assert sent.client_closed_at - cancelled_at < 1.0
    assert sent.tokens_sent < 10
    assert (await collect(provider)).finish is not None  # the provider is still usable


@pytest.mark.parametrize("how", ["break", "raise"])
async def test_leaving_the_block_early_closes_the_upstream_connection(
    fake: FakeGroq, provider: GroqProvider, how: str
) -> None:
    fake.enqueue(Scenario(n_tokens=200, token_interval=0.05))

    with pytest.raises(RuntimeError) if how == "raise" else contextlib.nullcontext():
        async with provider.stream(REQUEST) as stream:
            count = 0
            async for _ in stream:
                count += 1
                if count == 3:
                    if how == "raise":
                        raise RuntimeError("the consumer failed")
                    break
    left_at = time.monotonic()

    sent = await fake.wait_for_disconnect(0, timeout=1.0)
    assert sent.client_closed_at is not None
    assert sent.client_closed_at - left_at < 1.0
    assert sent.tokens_sent < 10


# --- the connection pool ---


async def test_many_concurrent_streams_all_progress_together(
    fake: FakeGroq, make_provider: ProviderFactory
) -> None:
    # The SDK's default pool (100 connections) would hold stream 101 until another ended.
    streams = 150
    provider = make_provider(max_connections=200)
    fake.default_scenario = Scenario(n_tokens=5, first_token_delay=0.3, token_interval=0.15)
    first_delta_at: list[float] = []
    finished_at: list[float] = []

    async def consume() -> None:
        first = True
        async with provider.stream(REQUEST) as stream:
            async for event in stream:
                if isinstance(event, Finish):
                    finished_at.append(time.monotonic())
                elif first:
                    first = False
                    first_delta_at.append(time.monotonic())

    await asyncio.gather(*(consume() for _ in range(streams)))

    assert len(first_delta_at) == len(finished_at) == streams
    assert max(first_delta_at) < min(finished_at)
    assert fake.connection_count == streams


async def test_the_pool_is_sized_by_max_connections(
    fake: FakeGroq, make_provider: ProviderFactory
) -> None:
    provider = make_provider(max_connections=2)
    fake.default_scenario = Scenario(n_tokens=3, token_interval=0.1)

    outcomes = await asyncio.gather(*(collect(provider) for _ in range(3)))

    assert all(outcome.finish is not None for outcome in outcomes)
    assert fake.connection_count == 2
    first_done = min(r.finished_at or 0.0 for r in fake.requests[:2])
    assert fake.requests[2].started_at >= first_done
