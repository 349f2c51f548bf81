"""The REST SSE shim read by SSE clients: `httpx-sse` (Python) and `curl -N` (docs/clients.md's
command, run as written)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import LiveServer
from tests.e2e.conftest import (
    assert_sse_reply_is_what_the_model_sent,
    doc_snippets,
    missing_tool,
)
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api

pytestmark = pytest.mark.e2e

TOKENS = ["Server", "-sent", " events", " all", " the", " way", "."]


async def test_httpx_sse_streams_a_reply(server: LiveServer, api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    first_request = len(fake_groq.requests)
    base_url, token, content = server.base_url, user.token, "Stream to httpx-sse"
    events: list[tuple[str, dict[str, Any]]] = []

    # --- docs/clients.md: httpx-sse ---
    async with httpx.AsyncClient(
        base_url=base_url,  # "http://127.0.0.1:8000"
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10, read=60),  # the server pings at least every 15 s
    ) as client:
        url = f"/api/v1/conversations/{conversation_id}/messages/stream"
        async with aconnect_sse(client, "POST", url, json={"content": content}) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                events.append((sse.event, sse.json()))
    # --- end of snippet ---

    assert len(fake_groq.requests) == first_request + 1
    assert_sse_reply_is_what_the_model_sent(events, fake_groq.requests[first_request], content)


async def test_curl_streams_a_reply_as_it_is_generated(
    server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    if shutil.which("curl") is None:
        missing_tool("curl", "apt-get install -y curl")
    command = doc_snippets()["curl"]
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    interval = 0.1
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=interval))
    first_request = len(fake_groq.requests)

    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        stdout=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "API": server.base_url,
            "TOKEN": user.token,
            "CONVERSATION_ID": conversation_id,
        },
    )
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    lines: list[tuple[float, str]] = []  # (arrival time, line) as curl printed them
    async with asyncio.timeout(30):
        async for raw in process.stdout:
            lines.append((loop.time(), raw.decode().rstrip("\n")))
        assert await process.wait() == 0

    events = []
    arrivals = []
    name = None
    for at, line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert name is not None
            events.append((name, json.loads(line.removeprefix("data: "))))
            arrivals.append(at)
    assert len(fake_groq.requests) == first_request + 1
    assert_sse_reply_is_what_the_model_sent(events, fake_groq.requests[first_request], "Hello!")
    # -N: each event shows up as the model produces it, not all at the end.
    first_delta, stop = arrivals[1], arrivals[-1]
    assert stop - first_delta >= interval * (len(TOKENS) - 2)
