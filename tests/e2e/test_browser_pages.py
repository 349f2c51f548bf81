"""Browser pages on another origin than the API's, as a web app would be: the SSE shim read
with fetch() and a streaming body reader (pages/sse.html), and graphql-ws in the browser
(pages/graphql-ws.html). The suite serves the pages on its own loopback port; the API lists
that origin in CORS_ORIGINS (which also admits websockets from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import LiveServer
from tests.e2e.conftest import (
    CDN_URL,
    NodeClients,
    StreamedReply,
    assert_reply_is_what_the_model_sent,
    assert_sse_reply_is_what_the_model_sent,
    open_page,
)
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api

pytestmark = pytest.mark.e2e

TOKENS = ["A", " page", " on", " another", " origin", " reads", " the", " stream", "."]


@pytest.fixture(scope="module")
def server_settings(page_origin: str) -> dict[str, Any]:
    return {"cors_origins": [page_origin]}


async def test_fetch_reads_the_sse_stream_as_it_arrives(
    chromium: NodeClients,
    page_server: str,
    server: LiveServer,
    api: Api,
    fake_groq: FakeGroq,
    artifacts: Path,
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    interval = 0.1
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=interval))
    first_request = len(fake_groq.requests)
    content = "Stream to a browser page"
    query = {
        "api": server.base_url,
        "token": user.token,
        "conversation": conversation_id,
        "content": content,
    }

    output = await open_page(
        chromium, f"{page_server}/sse.html?{urlencode(query)}", artifacts / "sse-fetch.png"
    )

    result = output["result"]
    assert result["error"] is None
    assert result["status"] == 200
    events = [(event["event"]["type"], event["event"]) for event in result["events"]]
    assert len(fake_groq.requests) == first_request + 1
    assert_sse_reply_is_what_the_model_sent(events, fake_groq.requests[first_request], content)
    # The reader got each event as the model produced it, not the whole body at the end.
    arrivals = [event["at"] for event in result["events"]]
    assert arrivals[-1] - arrivals[1] >= 1000 * interval * (len(TOKENS) - 2)
    assert output["report"]["console"] == []


async def test_a_page_on_an_origin_not_in_cors_origins_cannot_stream(
    chromium: NodeClients, page_server: str, server: LiveServer, api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    requests_before = len(fake_groq.requests)
    query = {
        "api": server.base_url,
        "token": user.token,
        "conversation": conversation_id,
        "content": "Not from here",
    }
    # Same page, same port, but `localhost` is another origin than the allowed 127.0.0.1.
    other_origin = page_server.replace("127.0.0.1", "localhost")

    output = await open_page(chromium, f"{other_origin}/sse.html?{urlencode(query)}", None)

    assert output["result"]["events"] == []
    assert "Failed to fetch" in output["result"]["error"]
    assert len(fake_groq.requests) == requests_before  # the preflight stopped it
    messages = await api.http.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers=user.headers
    )
    assert messages.json()["data"] == []


async def test_graphql_ws_in_the_browser_streams_a_reply(
    chromium: NodeClients,
    page_server: str,
    server: LiveServer,
    api: Api,
    fake_groq: FakeGroq,
    artifacts: Path,
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    first_request = len(fake_groq.requests)
    content = "Stream to graphql-ws in a browser"
    query = {
        "ws": server.ws_url,
        "token": user.token,
        "conversation": conversation_id,
        "content": content,
    }

    output = await open_page(
        chromium,
        f"{page_server}/graphql-ws.html?{urlencode(query)}",
        artifacts / "graphql-ws-browser.png",
        cdn=True,
    )

    result = output["result"]
    assert result["error"] is None
    assert output["report"]["cdnServed"] == [f"{CDN_URL}/graphql-ws@5.16.2/umd/graphql-ws.min.js"]
    (socket,) = output["report"]["websockets"]
    assert socket["url"] == server.ws_url
    assert len(fake_groq.requests) == first_request + 1
    reply = StreamedReply(result["events"])
    assert_reply_is_what_the_model_sent(reply, fake_groq.requests[first_request], content)
    assert reply.text == "".join(TOKENS)
