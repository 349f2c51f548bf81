"""What only the Anthropic provider does: the Messages request and the stream's details (the
shared behaviour is tests/unit/test_providers.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from app.llm.anthropic import AnthropicProvider, MessagesParser, messages_param
from app.llm.base import ChatMessage, ChatRequest, Finish, Usage
from app.llm.sdk import AttemptFailed
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.upstream import Scenario
from tests.support.providers import ANTHROPIC, API_KEY, collect, request

MODEL = ANTHROPIC.model


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=API_KEY) as server:
        yield server


async def test_the_system_prompt_goes_in_system_and_turns_alternate(fake: FakeAnthropic) -> None:
    provider = AnthropicProvider(api_key=API_KEY, base_url=fake.base_url)
    chat = ChatRequest(
        MODEL,
        [
            ChatMessage("system", "You are terse."),
            ChatMessage("user", "First."),
            ChatMessage("assistant", ""),  # a reply cancelled before its first token
            ChatMessage("user", "Second."),
            ChatMessage("assistant", "Answer."),
            ChatMessage("user", "Third."),
        ],
        max_tokens=128,
        temperature=0.4,
    )
    try:
        outcome = await collect(provider, chat)
    finally:
        await provider.aclose()

    assert outcome.finish is not None
    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["anthropic-version"]
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [
        {"role": "user", "content": "First.\n\nSecond."},
        {"role": "assistant", "content": "Answer."},
        {"role": "user", "content": "Third."},
    ]
    assert sent.body["max_tokens"] == 128
    assert sent.body["stream"] is True
    assert "temperature" not in sent.body  # the SDK no longer offers sampling parameters


def test_no_system_prompt_is_no_system() -> None:
    assert messages_param([ChatMessage("user", "hi")]) == (
        None,
        [{"role": "user", "content": "hi"}],
    )


def _feed(*events: dict[str, object]) -> tuple[MessagesParser, list[str]]:
    parser = MessagesParser()
    texts: list[str] = []
    body = b"".join(
        b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
        for e in events
    )
    parser.feed(body, texts)
    return parser, texts


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 1,
        },
    },
}


def test_stop_sequences_cache_usage_and_other_blocks() -> None:
    parser, texts = _feed(
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hm"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "ping"},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_stop"},
    )

    assert texts == ["Hi"]
    assert parser.request_id == "msg_1"
    assert parser.done
    assert parser.finish() == Finish("stop_sequence", Usage(115, 3), "END")


def test_an_end_without_a_stop_reason_is_incomplete() -> None:
    parser, _ = _feed(START, {"type": "message_stop"})

    with pytest.raises(AttemptFailed) as failed:
        parser.finish()
    assert failed.value.retryable


@pytest.mark.parametrize(
    ("error_type", "kind", "retryable"),
    [
        ("overloaded_error", "overloaded_error", True),
        ("rate_limit_error", "rate_limit_error", True),
        ("api_error", "upstream_error", True),
        ("invalid_request_error", "upstream_error", False),
    ],
)
def test_error_events(error_type: str, kind: str, retryable: bool) -> None:
    with pytest.raises(AttemptFailed) as failed:
        _feed(START, {"type": "error", "error": {"type": error_type, "message": "secret detail"}})

    assert failed.value.error.kind == kind
    assert failed.value.retryable is retryable
    assert "secret detail" not in failed.value.error.message


async def test_the_scenario_faults_reach_the_sdk_as_anthropic_sends_them(
    fake: FakeAnthropic,
) -> None:
    provider = AnthropicProvider(api_key=API_KEY, base_url=fake.base_url)
    fake.enqueue(Scenario(tokens=["a", "b"], error_chunk_after=1))
    try:
        outcome = await collect(provider, request(MODEL))
    finally:
        await provider.aclose()

    assert outcome.text == "a"
    assert outcome.error is not None
    assert outcome.error.kind == "overloaded_error"
