"""The REST SSE shim read by SSE clients: `httpx-sse` (Python), `curl -N` (docs/clients.md's
command, run as written), `eventsource-parser` (Node, js/eventsource-parser.mjs) and the
browser's own `EventSource` (Chromium, pages/eventsource.html).

`EventSource` can only GET, and the shim is a POST (the resume route, a GET, does not exist
yet): the page reads the stream through a loopback relay that POSTs to the API and hands the
response body on byte for byte. What EventSource parses is exactly what the API sent; what this
does not cover is EventSource's own request (headers, reconnection with Last-Event-ID).

The keep-alive tests make the model wait before its first token, so the server pings after
`message_start` has set a last event id: the state in which a ping followed by a blank line
became an empty event in httpx-sse.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from httpx_sse import aconnect_sse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import LiveServer
from tests.e2e.conftest import (
    PAGES_DIR,
    NodeClients,
    assert_sse_reply_is_what_the_model_sent,
    doc_snippets,
    free_port,
    missing_tool,
    open_page,
    serve_on_loopback,
)
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api

pytestmark = pytest.mark.e2e

TOKENS = ["Server", "-sent", " events", " all", " the", " way", "."]
KEEPALIVE = 0.2
SILENCE = KEEPALIVE * 6  # before the first token: several pings after message_start


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"stream_keepalive_seconds": KEEPALIVE}


def silent_then(tokens: list[str]) -> Scenario:
    return Scenario(tokens=tokens, first_token_delay=SILENCE, token_interval=0.02)


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


class Recording(httpx.AsyncBaseTransport):
    """httpx's transport, keeping a copy of every response body byte it hands on."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.body = bytearray()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response, self.body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Tee(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, copy: bytearray) -> None:
        self.response = response
        self.copy = copy

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.aiter_raw():
            self.copy.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


async def test_httpx_sse_never_sees_the_keepalive_as_an_event(
    server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(silent_then(TOKENS))
    first_request = len(fake_groq.requests)
    seen = []
    wire = Recording()
    url = f"{server.base_url}/api/v1/conversations/{conversation_id}/messages/stream"
    async with (
        httpx.AsyncClient(headers=user.headers, timeout=30, transport=wire) as client,
        aconnect_sse(client, "POST", url, json={"content": "wait"}) as source,
    ):
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            seen.append(sse)
    assert wire.body.count(b": ping") >= 2, "the model's silence was kept alive"
    assert all(sse.event and sse.data for sse in seen), seen  # before: an empty event per ping
    # httpx-sse carries the last id over to events without one, as the SSE spec says.
    assert [sse.id for sse in seen[:2]] == ["0", "0"]
    pairs = [(sse.event, sse.json()) for sse in seen]
    assert_sse_reply_is_what_the_model_sent(pairs, fake_groq.requests[first_request], "wait")


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


async def test_eventsource_parser_reads_the_stream_and_sees_keepalives_as_comments(
    node: NodeClients, server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(silent_then(TOKENS))
    first_request = len(fake_groq.requests)
    content = "Stream to eventsource-parser"

    output = await node.run(
        "eventsource-parser.mjs",
        {
            "api": server.base_url,
            "token": user.token,
            "conversationId": conversation_id,
            "content": content,
        },
    )

    assert output["status"] == 200
    events = output["events"]
    assert len(output["comments"]) >= 2 and set(output["comments"]) == {"ping"}
    # eventsource-parser reports an event's own id only: the block events have none.
    assert [event.get("id") for event in events[:3]] == ["0", None, "1"]
    pairs = [(event["event"], event["data"]) for event in events]
    assert_sse_reply_is_what_the_model_sent(pairs, fake_groq.requests[first_request], content)


@pytest.fixture(scope="module")
async def relay(server: LiveServer) -> AsyncIterator[str]:
    """A loopback origin serving pages/eventsource.html and GET /relay?..., which POSTs to the
    shim and answers with its response body, byte for byte (EventSource cannot POST)."""
    client = httpx.AsyncClient(base_url=server.base_url, timeout=30)

    async def page(_: Request) -> FileResponse:
        return FileResponse(PAGES_DIR / "eventsource.html")

    async def forward(request: Request) -> StreamingResponse:
        query = request.query_params
        upstream = await client.send(
            client.build_request(
                "POST",
                f"/api/v1/conversations/{query['conversation']}/messages/stream",
                json={"content": query["content"]},
                headers={"Authorization": f"Bearer {query['token']}"},
            ),
            stream=True,
        )

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(
            body(),
            status_code=upstream.status_code,
            media_type=upstream.headers["content-type"],
            headers={"cache-control": "no-cache"},
        )

    app = Starlette(routes=[Route("/eventsource.html", page), Route("/relay", forward)])
    try:
        async with serve_on_loopback(app, free_port()) as origin:
            yield origin
    finally:
        await client.aclose()


async def test_the_browsers_eventsource_parses_the_stream_without_empty_events(
    chromium: NodeClients,
    relay: str,
    api: Api,
    fake_groq: FakeGroq,
    artifacts: Path,
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(silent_then(TOKENS))
    first_request = len(fake_groq.requests)
    content = "Stream to EventSource"

    stream = f"{relay}/relay?" + urlencode(
        {"conversation": conversation_id, "token": user.token, "content": content}
    )
    page = f"{relay}/eventsource.html?{urlencode({'stream': stream})}"
    output = await open_page(chromium, page, artifacts / "sse-eventsource.png")

    result = output["result"]
    assert result["error"] is None
    events = result["events"]
    # No event reached the `message` listener: the keep-alives were never dispatched.
    assert all(event["listener"] == event["type"] != "message" for event in events), events
    assert [event["lastEventId"] for event in events[:2]] == ["0", "0"]
    pairs = [(event["type"], json.loads(event["data"])) for event in events]
    assert_sse_reply_is_what_the_model_sent(pairs, fake_groq.requests[first_request], content)
    assert output["report"]["console"] == []
