"""One suite, every provider: each real SDK against its loopback fake over real sockets.

Groq, OpenAI and the OpenAI-compatible servers' habits (Ollama, vLLM, llama.cpp), and Anthropic
pass the same cases: streams, usage, request ids, retries only before the first token, the first
token's deadline over all attempts, faults mid-stream, cancellation reaching the upstream, and
the connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.llm.base import Finish, Usage
from app.llm.sdk import SdkProvider
from tests.fakes.upstream import FakeUpstream, Scenario, deterministic_tokens
from tests.support.providers import CASES, ProviderCase, collect, request

TOKENS = ["Hel", "lo", ", ", "wörld", ' "quoted"\n', "🙂", "!"]

ProviderFactory = Callable[..., SdkProvider]


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest) -> ProviderCase:
    selected: ProviderCase = request.param
    return selected


@pytest.fixture
async def fake(case: ProviderCase) -> AsyncIterator[FakeUpstream]:
    async with case.new_fake() as server:
        yield server


@pytest.fixture
async def make_provider(case: ProviderCase, fake: FakeUpstream) -> AsyncIterator[ProviderFactory]:
    providers: list[SdkProvider] = []

    def make(**overrides: Any) -> SdkProvider:
        options: dict[str, Any] = {
            "connect_timeout": 2.0,
            "read_timeout": 5.0,
            "max_retries": 2,
            "retry_max_wait": 0.05,
            "max_connections": 50,
        }
        provider = case.provider(fake, **(options | overrides))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: ProviderFactory) -> SdkProvider:
    return make_provider()


async def run(case: ProviderCase, provider: SdkProvider, **chat: Any) -> Any:
    return await collect(provider, request(case.model, **chat))


# --- successful streams ---


@pytest.mark.parametrize("token_interval", [0.0, 0.01])
async def test_streams_the_reply_with_usage_and_request_id(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider, token_interval: float
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, token_interval=token_interval))

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish is not None
    assert outcome.finish.stop_reason == "end_turn"
    [sent] = fake.requests
    assert sent.body["model"] == case.model
    assert sent.body["stream"] is True
    assert sent.usage is not None
    assert sent.usage["completion_tokens"] == len(TOKENS)
    assert outcome.finish.usage == Usage(sent.usage["prompt_tokens"], len(TOKENS))
    assert outcome.request_id is not None
    if case.id not in ("ollama", "llamacpp"):  # they send no request-id header
        assert outcome.request_id == sent.request_id
    if token_interval:
        # A reader that keeps up gets a delta per chunk (two that land in one read are joined).
        assert len(outcome.deltas) > len(TOKENS) / 2


async def test_chunks_that_arrive_together_become_one_delta(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    tokens = deterministic_tokens(40)
    fake.enqueue(Scenario(tokens=tokens, http_chunks="per_write"))

    outcome = await run(case, provider)

    assert outcome.deltas == ["".join(tokens)]


@pytest.mark.parametrize("http_chunks", ["per_event", "per_write"])
async def test_parses_events_split_across_chunks_and_keepalives(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider, http_chunks: Any
) -> None:
    fake.enqueue(
        Scenario(tokens=TOKENS, fragment_events=True, comment_lines=True, http_chunks=http_chunks)
    )

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish is not None
    assert outcome.finish.usage is not None


async def test_length_finish_is_max_tokens(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, finish_reason="length"))

    outcome = await run(case, provider)

    prompt = fake.requests[0].usage["prompt_tokens"]
    assert outcome.finish == Finish("max_tokens", Usage(prompt, len(TOKENS)))


async def test_the_length_limit_is_sent_and_honoured(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(n_tokens=8))

    outcome = await run(case, provider, max_tokens=3)

    body = fake.requests[0].body
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 3
    assert outcome.text == "".join(deterministic_tokens(3))
    assert outcome.finish is not None
    assert outcome.finish.stop_reason == "max_tokens"


async def test_no_usage_from_upstream_is_no_usage(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, usage_placement="none"))

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish == Finish("end_turn", None)


async def test_a_body_that_ends_without_finish_or_end_marker_is_a_failure(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, finish_reason=None, send_done=False))

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert "ended before the reply was complete" in outcome.error.message
    assert len(fake.requests) == 1


async def test_a_body_that_ends_after_the_finish_without_end_marker_is_complete(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, send_done=False))

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)
    assert outcome.finish is not None
    assert outcome.finish.stop_reason == "end_turn"


async def test_sequential_streams_reuse_one_connection(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    for _ in range(3):
        assert (await run(case, provider)).finish is not None

    assert fake.connection_count == 1


# --- retries: only before the first token ---


@pytest.mark.parametrize(("header", "value"), [("retry_after", "0.3"), ("retry_after_ms", "300")])
async def test_rate_limit_waits_as_advised_then_retries(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory, header: str, value: str
) -> None:
    provider = make_provider(retry_max_wait=1.0)
    fake.enqueue(Scenario(status=429, **{header: value}), Scenario(tokens=TOKENS))

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)
    assert len(fake.requests) == 2
    first, second = fake.requests
    assert second.started_at - first.started_at >= 0.3


async def test_server_errors_exhaust_the_retries(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    provider = make_provider(max_retries=2)
    fake.enqueue(*[Scenario(status=500)] * 3)

    outcome = await run(case, provider)

    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert "500" in outcome.error.message
    assert len(fake.requests) == 3
    assert outcome.request_id == fake.requests[-1].request_id


@pytest.mark.parametrize("status", [503, 529])
async def test_overloaded(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory, status: int
) -> None:
    provider = make_provider(max_retries=1)
    fake.enqueue(Scenario(status=status), Scenario(status=status))

    outcome = await run(case, provider)

    assert outcome.error is not None
    # 529 is Anthropic's "overloaded"; elsewhere it is just another 5xx.
    overloaded = status == 503 or case.provider_name == "anthropic"
    assert outcome.error.kind == ("overloaded_error" if overloaded else "upstream_error")
    assert len(fake.requests) == 2


async def test_rate_limit_on_every_attempt(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    provider = make_provider(max_retries=1)
    fake.enqueue(*[Scenario(status=429, retry_after="0")] * 2)

    outcome = await run(case, provider)

    assert outcome.error is not None
    assert outcome.error.kind == "rate_limit_error"
    assert outcome.error.retry_after == 0.0
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("header", "value", "seconds"), [("retry_after", "30", 30.0), ("retry_after_ms", "45000", 45.0)]
)
async def test_advised_wait_beyond_the_limit_is_not_waited_for(
    case: ProviderCase,
    fake: FakeUpstream,
    make_provider: ProviderFactory,
    header: str,
    value: str,
    seconds: float,
) -> None:
    provider = make_provider(retry_max_wait=60.0, read_timeout=5.0)  # past the deadline, too
    fake.enqueue(Scenario(status=429, **{header: value}))

    started = time.monotonic()
    outcome = await run(case, provider)

    assert time.monotonic() - started < 1.0
    assert outcome.error is not None
    assert outcome.error.kind == "rate_limit_error"
    assert outcome.error.retry_after == seconds
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_client_errors_are_not_retried(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider, status: int
) -> None:
    fake.enqueue(
        Scenario(
            status=status,
            error_code="model_not_found",
            error_message="upstream detail that mentions sk_unit_test_key_do_not_leak",
        )
    )

    outcome = await run(case, provider)

    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert str(status) in outcome.error.message
    assert "upstream detail" not in outcome.error.message
    assert len(fake.requests) == 1


async def test_a_wrong_api_key_is_not_retried(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    if not case.needs_key:
        pytest.skip("this server takes any key")
    provider = make_provider(api_key="sk_wrong_key")

    outcome = await run(case, provider)

    assert outcome.error is not None
    assert "401" in outcome.error.message
    assert "sk_wrong_key" not in outcome.error.message
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
    ids=["500", "502", "408", "429", "dropped", "error-event", "invalid-json"],
)
async def test_failures_before_the_first_token_are_retried(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider, failure: Scenario
) -> None:
    fake.enqueue(failure, Scenario(tokens=TOKENS))

    outcome = await run(case, provider)

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
@pytest.mark.parametrize("fault", ["drop_after", "error_chunk_after", "invalid_json_after"])
async def test_failures_after_text_end_the_stream_without_retry(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider, fault: str, pace: dict[str, Any]
) -> None:
    fake.enqueue(Scenario(tokens=TOKENS, **pace, **{fault: 3}))

    outcome = await run(case, provider)

    kind, word = {
        "drop_after": ("upstream_error", "cut off"),
        "error_chunk_after": case.midstream_error,
        "invalid_json_after": ("upstream_error", "unreadable"),
    }[fault]
    assert outcome.text == "".join(TOKENS[:3])
    assert outcome.error is not None
    assert outcome.error.kind == kind
    assert word in outcome.error.message
    assert len(fake.requests) == 1
    assert fake.requests[0].tokens_sent == 3


async def test_silence_mid_stream_times_out_without_retry(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    provider = make_provider(read_timeout=0.5, max_retries=2)
    fake.enqueue(Scenario(tokens=TOKENS, hang_after=2))

    started = time.monotonic()
    outcome = await run(case, provider)

    assert 0.5 <= time.monotonic() - started < 2.0
    assert outcome.text == "".join(TOKENS[:2])
    assert outcome.error is not None
    assert outcome.error.kind == "timeout_error"
    assert len(fake.requests) == 1
    await fake.wait_for_disconnect(0, timeout=1.0)


TIMEOUT = 0.6


@pytest.mark.parametrize(
    "hang",
    [Scenario(hang_before_headers=True), Scenario(hang_after=0)],
    ids=["before-headers", "after-headers"],
)
async def test_a_hung_model_fails_the_reply_after_one_timeout_not_one_per_attempt(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory, hang: Scenario
) -> None:
    # LLM_TIMEOUT_SECONDS is one deadline for the first token over every attempt.
    provider = make_provider(read_timeout=TIMEOUT, max_retries=2)
    fake.enqueue(hang, hang, hang)

    started = time.monotonic()
    outcome = await run(case, provider)
    elapsed = time.monotonic() - started

    assert outcome.error is not None
    assert outcome.error.kind == "timeout_error"
    assert len(fake.requests) == 1  # the deadline was spent waiting: nothing left to retry in
    assert elapsed < 2 * TIMEOUT  # one timeout per attempt would be three
    await fake.wait_for_disconnect(0, timeout=1.0)  # and the hung request was let go


async def test_retries_happen_within_the_first_token_deadline(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    provider = make_provider(read_timeout=TIMEOUT, max_retries=2)
    fake.enqueue(Scenario(status=500), Scenario(hang_after=0), Scenario(hang_after=0))

    outcome = await run(case, provider)

    assert outcome.error is not None
    assert outcome.error.kind == "timeout_error"
    assert len(fake.requests) == 2  # retried after the 500, then the hang used the rest
    first, second = fake.requests
    failed_at = (await fake.wait_for_disconnect(1, timeout=1.0)).client_closed_at
    assert failed_at is not None
    # The second attempt was cut where the first token's deadline fell, not a timeout after
    # it started.
    assert failed_at - first.started_at < TIMEOUT + 0.3
    assert failed_at - second.started_at < TIMEOUT


async def test_a_late_first_token_within_the_deadline_is_fine(
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    provider = make_provider(read_timeout=1.0, max_retries=0)
    fake.enqueue(Scenario(tokens=TOKENS, first_token_delay=0.3, token_interval=0.2))

    outcome = await run(case, provider)

    assert outcome.text == "".join(TOKENS)  # 1.5 s in all: each silence is under the timeout


async def test_connection_refused_is_an_upstream_error(
    case: ProviderCase, make_provider: ProviderFactory
) -> None:
    async with case.new_fake() as gone:
        base_url = gone.base_url  # a port nobody listens on once it is closed
    provider = make_provider(base_url=base_url, max_retries=1)

    outcome = await run(case, provider)

    assert outcome.error is not None
    assert outcome.error.kind == "upstream_error"
    assert "connect" in outcome.error.message


# --- leaving early closes the upstream connection at once ---


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(n_tokens=200, token_interval=0.05))
    three_deltas = asyncio.Event()

    async def consume() -> None:
        count = 0
        async with provider.stream(request(case.model)) as stream:
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
    assert (await run(case, provider)).finish is not None  # the provider is still usable


async def test_cancelling_before_the_first_token_closes_the_upstream_connection(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider
) -> None:
    fake.enqueue(Scenario(hang_after=0))
    task = asyncio.create_task(run(case, provider))
    await fake.wait_for_request(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await fake.wait_for_disconnect(0, timeout=1.0)


@pytest.mark.parametrize("how", ["break", "raise"])
async def test_leaving_the_block_early_closes_the_upstream_connection(
    case: ProviderCase, fake: FakeUpstream, provider: SdkProvider, how: str
) -> None:
    fake.enqueue(Scenario(n_tokens=200, token_interval=0.05))

    with pytest.raises(RuntimeError) if how == "raise" else contextlib.nullcontext():
        async with provider.stream(request(case.model)) as stream:
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
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    # The SDKs' default pool (100 connections) would hold stream 101 until another ended.
    streams = 150
    provider = make_provider(max_connections=200)
    fake.default_scenario = Scenario(n_tokens=5, first_token_delay=0.3, token_interval=0.15)
    first_delta_at: list[float] = []
    finished_at: list[float] = []

    async def consume() -> None:
        first = True
        async with provider.stream(request(case.model)) as stream:
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
    case: ProviderCase, fake: FakeUpstream, make_provider: ProviderFactory
) -> None:
    provider = make_provider(max_connections=2)
    fake.default_scenario = Scenario(n_tokens=3, token_interval=0.1)

    outcomes = await asyncio.gather(*(run(case, provider) for _ in range(3)))

    assert all(outcome.finish is not None for outcome in outcomes)
    assert fake.connection_count == 2
    first_done = min(r.finished_at or 0.0 for r in fake.requests[:2])
    assert fake.requests[2].started_at >= first_done
