"""One streamed reply, end to end: the same scenarios over the SSE shim and both websocket
subprotocols, against the fake Groq server, asserting the same events and the same stored rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.llm.models import get_model
from app.llm.tokens import count_tokens
from tests.fakes.groq_server import FakeGroq, Scenario, deterministic_tokens
from tests.support.api import Api, User
from tests.support.streams import StreamResult, Transport, transports, wait_until

CHECKPOINT = 0.2


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {
        "stream_checkpoint_seconds": CHECKPOINT,
        "llm_timeout_seconds": 1.5,
        "llm_retry_max_wait_seconds": 2,
        "stream_keepalive_seconds": 0.3,
    }


@pytest.fixture(params=["sse", "graphql-transport-ws", "graphql-ws"])
def transport(request: pytest.FixtureRequest, api: Api) -> Transport:
    return transports(api.http, api.ws_url)[request.param]


async def settled(api: Api, user: User, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's messages once no reply is in progress (every fault case ends so)."""

    async def no_reply_in_progress() -> bool:
        rows = await api.messages(user, conversation_id)
        return all(row["finish_reason"] is not None for row in rows if row["role"] == "assistant")

    await wait_until(no_reply_in_progress, timeout=5)
    return await api.messages(user, conversation_id)


def assert_well_formed(result: StreamResult, *, complete: bool = True) -> None:
    assert result.types[0] == "message_start", result.types
    body = result.types[1:]
    if complete:
        assert body[-2:] == ["message_delta", "message_stop"], result.types
        body = body[:-2]
    assert set(body) <= {"content_block_delta", "error"}, result.types
    ids = [event["id"] for event in result.events if "id" in event]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


async def new_conversation(api: Api, user: User, **fields: Any) -> str:
    conversation = await api.create_conversation(user, **fields)
    return str(conversation["id"])


# --- the happy path ------------------------------------------------------------------------------


async def test_reply_streams_and_is_stored_completely(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user, system_prompt="You are terse.")
    tokens = ["Hel", "lo", ",", " wor", "ld", "!"]
    fake_groq.enqueue(
        Scenario(tokens=tokens, token_interval=0.01, prompt_tokens=42, completion_tokens=6)
    )
    first_request = len(fake_groq.requests)

    result = await transport.stream(
        user, conversation_id, "Say hello", max_tokens=100, temperature=0.3
    )

    assert result.error is None
    assert_well_formed(result)
    start, delta, stop = (
        result.first("message_start"),
        result.first("message_delta"),
        result.events[-1],
    )
    assert result.text == "".join(tokens)
    assert 1 <= len(result.deltas) <= len(tokens)
    assert start["role"] == "assistant"
    assert start["model"] == "llama-3.1-8b-instant"
    assert start["input_tokens"] > 0
    assert delta["stop_reason"] == "end_turn"
    assert delta["output_tokens"] == 6
    assert delta["latency_ms"] >= 0

    upstream = fake_groq.requests[first_request]
    assert len(fake_groq.requests) == first_request + 1
    assert upstream.body["model"] == "llama-3.1-8b-instant"
    assert upstream.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]
    assert upstream.body.get("max_completion_tokens", upstream.body.get("max_tokens")) == 100
    assert upstream.body["temperature"] == 0.3
    assert upstream.body["stream"] is True

    rows = await settled(api, user, conversation_id)
    assert [row["role"] for row in rows] == ["user", "assistant"]
    question, answer = rows
    assert question["content"] == "Say hello"
    assert question["token_count"] == count_tokens("Say hello")
    assert answer["id"] == start["message_id"]
    assert answer["content"] == result.text
    assert answer["finish_reason"] == "end_turn"
    assert answer["token_count"] == count_tokens(result.text)
    assert answer["model"] == "llama-3.1-8b-instant"
    assert answer["latency_ms"] is not None and answer["latency_ms"] >= 0
    metadata = answer["metadata"]
    assert metadata["input_tokens"] == 42
    assert metadata["output_tokens"] == 6
    assert metadata["provider_request_id"] == upstream.request_id
    assert metadata["time_to_first_token_ms"] is not None
    assert metadata["cost_usd"] == pytest.approx(get_model("llama-3.1-8b-instant").cost_usd(42, 6))
    if transport.name != "sse":  # the GraphQL stop event carries the stored message
        stored = stop["message"]
        assert stored["content"] == result.text
        assert stored["finishReason"] == "end_turn"
        assert stored["metadata"]["output_tokens"] == 6


async def test_length_finish_is_max_tokens(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(n_tokens=10))
    result = await transport.stream(user, conversation_id, "Go on and on", max_tokens=4)
    assert result.first("message_delta")["stop_reason"] == "max_tokens"
    assert result.text == "".join(deterministic_tokens(4))
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["finish_reason"] == "max_tokens"


async def test_usage_falls_back_to_tiktoken_when_upstream_reports_none(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(tokens=["one", " two", " three"], usage_placement="none"))
    result = await transport.stream(user, conversation_id, "count")
    rows = await settled(api, user, conversation_id)
    assert result.first("message_delta")["output_tokens"] == count_tokens("one two three")
    assert rows[-1]["metadata"]["output_tokens"] == count_tokens("one two three")
    assert rows[-1]["metadata"]["input_tokens"] == result.first("message_start")["input_tokens"]


async def test_history_goes_to_the_model_oldest_first(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user, system_prompt="Be kind.")
    for reply in (["A1"], ["A2"], ["A3"]):
        fake_groq.enqueue(Scenario(tokens=reply))
    for question in ("Q1", "Q2"):
        assert (await transport.stream(user, conversation_id, question)).error is None
    before = len(fake_groq.requests)
    assert (await transport.stream(user, conversation_id, "Q3")).error is None
    assert fake_groq.requests[before].body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "Q3"},
    ]
    rows = await settled(api, user, conversation_id)
    assert [row["content"] for row in rows] == ["Q1", "A1", "Q2", "A2", "Q3", "A3"]


async def test_oldest_turns_are_trimmed_to_fit_the_context_window(
    api: Api, fake_groq: FakeGroq
) -> None:
    # llama-3.3-70b-versatile: 131,072-token window; with max_tokens 32,768 the prompt gets 98,304.
    user = await api.register()
    sse = transports(api.http, api.ws_url)["sse"]
    conversation_id = await new_conversation(api, user, model="llama-3.3-70b-versatile")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    questions = [
        " ".join(f"{w}{i}" for i in range(2_000) for w in words[:5])[:79_000] + f" #{n}"
        for n in range(5)
    ]
    per_question = count_tokens(questions[0])
    assert 4 * per_question < 98_304 < 5 * per_question, per_question
    for question in questions:
        fake_groq.enqueue(Scenario(tokens=["ok"]))
        before = len(fake_groq.requests)
        result = await sse.stream(user, conversation_id, question, max_tokens=32_768)
        assert result.error is None, result.error
    sent = fake_groq.requests[before].body["messages"]
    # Q1 (and the reply it orphaned) were dropped; the newest turns and the new question stayed.
    assert [m["content"][-3:] for m in sent if m["role"] == "user"] == [" #1", " #2", " #3", " #4"]
    assert sent[0]["role"] == "user"
    assert sent[-1]["content"] == questions[-1]


# --- disconnects and faults -----------------------------------------------------------------


async def test_client_disconnect_cancels_upstream_and_keeps_the_partial_reply(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(n_tokens=200, token_interval=0.05))
    index = len(fake_groq.requests)
    result = await transport.stream(user, conversation_id, "Tell me a story", disconnect_after=3)
    assert len(result.deltas) == 3
    upstream = await fake_groq.wait_for_disconnect(index, timeout=1.0)
    assert upstream.tokens_sent < 200
    rows = await settled(api, user, conversation_id)
    assert rows[0]["content"] == "Tell me a story"
    assert rows[-1]["finish_reason"] == "cancelled"
    assert rows[-1]["content"].startswith(result.text)
    assert rows[-1]["content"] == upstream.text_sent[: len(rows[-1]["content"])]


async def test_websocket_drop_cancels_like_complete(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(n_tokens=200, token_interval=0.05))
    index = len(fake_groq.requests)
    ws = transports(api.http, api.ws_url)["graphql-transport-ws"]
    result = await ws.stream(  # type: ignore[call-arg]
        user, conversation_id, "Drop me", disconnect_after=2, complete_instead_of_drop=False
    )
    assert len(result.deltas) == 2
    await fake_groq.wait_for_disconnect(index, timeout=1.0)
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["finish_reason"] == "cancelled"
    assert rows[-1]["content"].startswith(result.text)


FAULTS = {
    "dropped-connection": Scenario(n_tokens=10, token_interval=0.01, drop_after=3),
    "error-chunk": Scenario(n_tokens=10, token_interval=0.01, error_chunk_after=3),
    "invalid-json": Scenario(n_tokens=10, token_interval=0.01, invalid_json_after=3),
    "hang": Scenario(n_tokens=10, token_interval=0.01, hang_after=3),
}


@pytest.mark.parametrize("scenario", FAULTS.values(), ids=FAULTS.keys())
async def test_midstream_failure_stores_the_partial_reply_as_error(
    api: Api, fake_groq: FakeGroq, transport: Transport, scenario: Scenario
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(scenario)
    index = len(fake_groq.requests)
    result = await transport.stream(user, conversation_id, "Break")
    expected_text = "".join(deterministic_tokens(3))
    assert result.text == expected_text
    assert result.error is not None
    if transport.name == "sse":
        expected_kind = "timeout_error" if scenario.hang_after is not None else "upstream_error"
        assert result.events[-1] == {**result.error, "type": "error"}
        assert result.error["kind"] == expected_kind
    else:
        assert result.error["code"] == "UPSTREAM_ERROR"
    assert "message_stop" not in result.types
    assert len(fake_groq.requests) == index + 1  # never retried once text has flowed
    rows = await settled(api, user, conversation_id)
    assert rows[0]["role"] == "user" and rows[0]["content"] == "Break"
    assert rows[-1]["finish_reason"] == "error"
    assert rows[-1]["content"] == expected_text


async def test_rate_limited_then_success_is_one_reply(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(status=429, retry_after="1"), Scenario(tokens=["fine"]))
    index = len(fake_groq.requests)
    result = await transport.stream(user, conversation_id, "Again")
    assert result.error is None
    assert result.text == "fine"
    assert len(fake_groq.requests) == index + 2
    first, second = fake_groq.requests[index], fake_groq.requests[index + 1]
    assert second.started_at - first.started_at >= 0.9  # retry-after honoured
    rows = await settled(api, user, conversation_id)
    assert [row["role"] for row in rows] == ["user", "assistant"]
    assert rows[-1]["finish_reason"] == "end_turn"


async def test_upstream_failing_before_the_first_token_is_an_error_event(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(*[Scenario(status=500)] * 3)  # LLM_MAX_RETRIES=2: three attempts
    index = len(fake_groq.requests)
    result = await transport.stream(user, conversation_id, "Hello?")
    assert result.types[0] == "message_start"  # the stream had started: the error comes in it
    assert result.deltas == []
    if transport.name == "sse":
        assert result.error is not None and result.error["kind"] == "upstream_error"
    else:
        assert result.error is not None and result.error["code"] == "UPSTREAM_ERROR"
    assert len(fake_groq.requests) == index + 3
    rows = await settled(api, user, conversation_id)
    assert rows[0]["content"] == "Hello?"
    assert rows[-1]["finish_reason"] == "error" and rows[-1]["content"] == ""


# --- refusals before the stream ----------------------------------------------------------------


def refusal_code(result: StreamResult) -> tuple[Any, ...]:
    assert result.error is not None
    if "status" in result.error:
        return (result.error["status"], result.error["body"]["error"]["type"])
    assert result.events == []
    return (result.error["code"],)


async def test_a_second_stream_in_the_same_conversation_is_a_conflict(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(n_tokens=30, token_interval=0.05))
    sse = transports(api.http, api.ws_url)["sse"]
    started = asyncio.Event()

    async def mark(event: dict[str, Any]) -> None:
        started.set()

    index = len(fake_groq.requests)
    first = asyncio.create_task(sse.stream(user, conversation_id, "first", on_event=mark))
    await asyncio.wait_for(started.wait(), 5)
    await fake_groq.wait_for_request(index)
    requests_before = index + 1
    second = await transport.stream(user, conversation_id, "second")
    assert refusal_code(second) in {(409, "conflict_error"), ("CONFLICT",)}
    assert len(fake_groq.requests) == requests_before
    assert (await first).error is None
    rows = await settled(api, user, conversation_id)
    assert [row["content"] for row in rows if row["role"] == "user"] == ["first"]


async def test_a_reply_left_by_a_dead_process_is_interrupted(
    api: Api, fake_groq: FakeGroq, transport: Transport, owner_engine: AsyncEngine
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(tokens=["Half an ans"]), Scenario(tokens=["Whole"]))
    await transport.stream(user, conversation_id, "first")
    await _make_reply_look_abandoned(owner_engine, conversation_id)
    result = await transport.stream(user, conversation_id, "second")
    assert result.error is None and result.text == "Whole"
    rows = await settled(api, user, conversation_id)
    assert [row["finish_reason"] for row in rows if row["role"] == "assistant"] == [
        "interrupted",
        "end_turn",
    ]


async def _make_reply_look_abandoned(engine: AsyncEngine, conversation_id: str) -> None:
    """Turn the conversation's finished reply into one a crashed process left mid-stream."""
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    async with engine.begin() as connection:
        is_sqlite = connection.dialect.name == "sqlite"
        await connection.execute(
            text(
                "UPDATE messages SET finish_reason = NULL, updated_at = :at "
                "WHERE role = 'assistant' AND conversation_id = :c"
            ),
            {
                "at": long_ago.replace(tzinfo=None) if is_sqlite else long_ago,
                "c": conversation_id.replace("-", "") if is_sqlite else conversation_id,
            },
        )


async def test_readers_find_an_abandoned_reply_interrupted(
    api: Api, fake_groq: FakeGroq, owner_engine: AsyncEngine
) -> None:
    user = await api.register()
    rest_id, graphql_id = await new_conversation(api, user), await new_conversation(api, user)
    fake_groq.enqueue(Scenario(tokens=["partial"]), Scenario(tokens=["partial"]))
    sse = transports(api.http, api.ws_url)["sse"]
    for conversation_id in (rest_id, graphql_id):
        await sse.stream(user, conversation_id, "q")
        await _make_reply_look_abandoned(owner_engine, conversation_id)
    # No new reply: reading the conversation is enough to settle what a dead process left.
    rows = await api.messages(user, rest_id)
    assert rows[-1]["finish_reason"] == "interrupted"
    assert rows[-1]["content"] == "partial"  # the last checkpoint is kept
    query = """query ($id: ID!) { conversation(id: $id) {
        messages(first: 10) { edges { node { role finishReason } } } } }"""
    data = await api.gql(query, {"id": graphql_id}, user=user)
    edges = data["conversation"]["messages"]["edges"]
    assert [e["node"]["finishReason"] for e in edges] == [None, "interrupted"]


async def test_another_users_conversation_is_not_found_and_the_model_is_not_called(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    alice, mallory = await api.register(), await api.register()
    conversation_id = await new_conversation(api, alice)
    before = len(fake_groq.requests)
    result = await transport.stream(mallory, conversation_id, "let me in")
    assert refusal_code(result) in {(404, "not_found_error"), ("NOT_FOUND",)}
    assert len(fake_groq.requests) == before
    assert await api.messages(alice, conversation_id) == []


INVALID = {
    "empty": {"content": ""},
    "blank": {"content": "   \n"},
    "too-long": {"content": "x" * 100_001},
    "max-tokens-zero": {"content": "hi", "max_tokens": 0},
    "max-tokens-over-model-limit": {"content": "hi", "max_tokens": 131_073},
    "temperature-too-high": {"content": "hi", "temperature": 2.5},
    "temperature-negative": {"content": "hi", "temperature": -0.1},
}


@pytest.mark.parametrize("values", INVALID.values(), ids=INVALID.keys())
async def test_invalid_input_is_refused_before_anything_is_stored(
    api: Api, fake_groq: FakeGroq, transport: Transport, values: dict[str, Any]
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    before = len(fake_groq.requests)
    result = await transport.stream(user, conversation_id, **values)
    assert refusal_code(result) in {(422, "invalid_request_error"), ("BAD_USER_INPUT",)}
    assert len(fake_groq.requests) == before
    assert await api.messages(user, conversation_id) == []


async def test_unauthenticated_stream_is_refused(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    response = await api.http.post(
        f"/api/v1/conversations/{conversation_id}/messages/stream", json={"content": "hi"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


# --- while streaming ---------------------------------------------------------------------------


async def test_the_reply_in_progress_is_visible_and_checkpointed(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(n_tokens=40, token_interval=0.05))
    sse = transports(api.http, api.ws_url)["sse"]
    stream = asyncio.create_task(sse.stream(user, conversation_id, "slowly"))
    seen: list[dict[str, Any]] = []

    async def checkpointed() -> bool:
        rows = await api.messages(user, conversation_id)
        if len(rows) < 2:
            return False
        seen.append(rows[-1])
        return rows[-1]["finish_reason"] is None and len(rows[-1]["content"]) > 0

    await wait_until(checkpointed, timeout=3)
    in_progress = seen[-1]
    result = await stream
    assert in_progress["role"] == "assistant"
    assert in_progress["id"] == result.first("message_start")["message_id"]
    assert result.text.startswith(in_progress["content"])
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["content"] == result.text


async def test_sse_sends_keepalive_pings_while_the_model_is_silent(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(tokens=["late"], first_token_delay=1.0))
    sse = transports(api.http, api.ws_url)["sse"]
    result = await sse.stream(user, conversation_id, "wait for it")
    assert result.error is None and result.text == "late"
    assert ": ping" in result.raw


async def test_echo_model_streams_offline(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    conversation_id = await new_conversation(api, user, model="echo")
    before = len(fake_groq.requests)
    result = await transport.stream(user, conversation_id, "ping pong")
    assert result.error is None
    assert "ping pong" in result.text
    assert result.first("message_start")["model"] == "echo"
    assert len(fake_groq.requests) == before
    rows = await settled(api, user, conversation_id)
    assert rows[-1]["content"] == result.text and rows[-1]["model"] == "echo"


# --- usage ---------------------------------------------------------------------------------------

USAGE = """query { usage { requests inputTokens outputTokens totalTokens estimatedCostUsd
    byModel { model requests inputTokens outputTokens estimatedCostUsd } } }"""


async def test_usage_sums_the_stored_replies(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    sse = transports(api.http, api.ws_url)["sse"]
    first = await new_conversation(api, user)
    second = await new_conversation(api, user, model="openai/gpt-oss-20b")
    fake_groq.enqueue(
        Scenario(tokens=["a"], prompt_tokens=100, completion_tokens=10),
        Scenario(tokens=["b"], prompt_tokens=200, completion_tokens=20),
        Scenario(tokens=["c"], prompt_tokens=300, completion_tokens=30),
    )
    for conversation_id in (first, first, second):
        assert (await sse.stream(user, conversation_id, "q")).error is None
    usage = (await api.gql(USAGE, user=user))["usage"]
    assert (usage["requests"], usage["inputTokens"], usage["outputTokens"]) == (3, 600, 60)
    assert usage["totalTokens"] == 660
    small, large = get_model("llama-3.1-8b-instant"), get_model("openai/gpt-oss-20b")
    expected_cost = small.cost_usd(300, 30) + large.cost_usd(300, 30)
    assert usage["estimatedCostUsd"] == pytest.approx(expected_cost)
    by_model = {row["model"]: row for row in usage["byModel"]}
    assert by_model["llama-3.1-8b-instant"]["requests"] == 2
    assert by_model["openai/gpt-oss-20b"]["inputTokens"] == 300

    rest = (await api.http.get("/api/v1/usage", headers=user.headers)).json()
    assert (rest["requests"], rest["input_tokens"], rest["output_tokens"]) == (3, 600, 60)
    assert rest["estimated_cost_usd"] == pytest.approx(usage["estimatedCostUsd"])

    query = """query ($id: ID!) { conversation(id: $id) { usage { requests inputTokens } } }"""
    per_conversation = await api.gql(query, {"id": first}, user=user)
    assert per_conversation["conversation"]["usage"] == {"requests": 2, "inputTokens": 300}

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = await api.gql(
        "query ($s: DateTime) { usage(since: $s) { requests } }", {"s": future}, user=user
    )
    assert empty["usage"]["requests"] == 0
    other = await api.register()
    assert (await api.gql(USAGE, user=other))["usage"]["requests"] == 0


async def test_usage_rejects_an_inverted_range(api: Api) -> None:
    user = await api.register()
    error = await api.gql_error(
        'query { usage(since: "2026-02-01T00:00:00Z", until: "2026-01-01T00:00:00Z") '
        "{ requests } }",
        user=user,
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    response = await api.http.get(
        "/api/v1/usage",
        params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=user.headers,
    )
    assert response.status_code == 422


async def test_a_silent_reply_stays_live_through_its_heartbeats(
    api: Api, fake_groq: FakeGroq
) -> None:
    # Silent for many checkpoint intervals: unchanged text still refreshes its heartbeat, so a
    # second request is a conflict, not a takeover of a reply judged dead.
    user = await api.register()
    conversation_id = await new_conversation(api, user)
    fake_groq.enqueue(Scenario(tokens=["finally"], first_token_delay=6 * CHECKPOINT))
    sse = transports(api.http, api.ws_url)["sse"]
    started = asyncio.Event()

    async def mark(event: dict[str, Any]) -> None:
        started.set()

    first = asyncio.create_task(sse.stream(user, conversation_id, "wait", on_event=mark))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(4 * CHECKPOINT)  # past the three intervals that mark a reply stale
    second = await sse.stream(user, conversation_id, "me too")
    assert refusal_code(second) == (409, "conflict_error")
    assert (await first).text == "finally"
    rows = await settled(api, user, conversation_id)
    assert [row["finish_reason"] for row in rows if row["role"] == "assistant"] == ["end_turn"]


# --- coalescing ----------------------------------------------------------------------------------


async def _hog_the_event_loop(until: asyncio.Event) -> None:
    """Keep the server's event loop busy, as a saturated server's would be."""
    loop = asyncio.get_running_loop()
    while not until.is_set():
        end = loop.time() + 0.01
        while loop.time() < end:  # CPU work, not sleep: nothing else runs meanwhile
            pass
        await asyncio.sleep(0)


async def test_a_server_that_falls_behind_sends_fewer_larger_deltas_with_exact_text(
    api: Api, fake_groq: FakeGroq, transport: Transport
) -> None:
    user = await api.register()
    tokens = [f"<{i:03d}>" for i in range(300)]
    calm_id, busy_id = await new_conversation(api, user), await new_conversation(api, user)
    paced = Scenario(tokens=tokens, token_interval=0.002)  # 500 tokens a second, like Groq
    fake_groq.enqueue(paced, paced)

    calm = await transport.stream(user, calm_id, "go")
    done = asyncio.Event()
    hog = asyncio.create_task(_hog_the_event_loop(done))
    try:
        busy = await transport.stream(user, busy_id, "go")
    finally:
        done.set()
        await hog

    assert calm.text == busy.text == "".join(tokens)  # in order, nothing lost or repeated
    # Keeping up, each chunk goes out as it lands; behind, what piled up goes out joined.
    assert len(calm.deltas) > 100
    assert len(busy.deltas) < len(calm.deltas) / 3, (len(busy.deltas), len(calm.deltas))
    rows = await settled(api, user, busy_id)
    assert rows[-1]["content"] == busy.text
