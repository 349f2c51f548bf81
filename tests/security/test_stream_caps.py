"""A stream's hard caps: however long the model would go on, a reply stops at
STREAM_MAX_OUTPUT_CHARS (`max_tokens`) and at STREAM_MAX_SECONDS (an error), and the upstream
request is closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api
from tests.support.streams import transports

pytestmark = pytest.mark.usefixtures("server_survives")

MAX_CHARS = 1000
MAX_SECONDS = 1.0


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"stream_max_output_chars": MAX_CHARS, "stream_max_seconds": MAX_SECONDS}


async def test_output_is_capped(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    conversation_id = str((await api.create_conversation(user))["id"])
    fake_groq.enqueue(Scenario(n_tokens=2000, token_interval=0.001))
    result = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "go")
    assert result.error is None, result.error
    assert result.first("message_delta")["stop_reason"] == "max_tokens"
    # The reply stops at the delta that reaches the cap (a delta is what one read of the upstream
    # brought: one token or a few).
    assert len(result.text) >= MAX_CHARS
    assert len(result.text) - len(result.deltas[-1]) < MAX_CHARS
    upstream = fake_groq.requests[-1]
    await asyncio.wait_for(upstream.done.wait(), 5)
    assert upstream.client_closed_early
    assert upstream.tokens_sent < 2000


async def test_duration_is_capped(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    conversation_id = str((await api.create_conversation(user))["id"])
    fake_groq.enqueue(Scenario(n_tokens=400, token_interval=0.02))  # eight seconds of tokens
    started = time.monotonic()
    result = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "go")
    assert time.monotonic() - started < MAX_SECONDS + 2
    assert result.error is not None
    assert result.error["kind"] == "timeout_error", result.error
    assert fake_groq.requests[-1].client_closed_early
