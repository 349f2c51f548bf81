"""The reference graphql-transport-ws client, `graphql-ws`, in Node (js/graphql-ws-node.mjs).

The script registers, creates a conversation and streams a reply with the token in
`connectionParams`, as docs/clients.md shows; this test compares what it received with what the
fake Groq server streamed and with what the API stored.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer
from tests.e2e.conftest import NodeClients, StreamedReply, assert_reply_is_what_the_model_sent
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import DEFAULT_PASSWORD, unique_email

pytestmark = pytest.mark.e2e

TOKENS = ["Streamed", " to", " graphql", "-ws", " in", " Node", "."]


async def test_node_graphql_ws_client_streams_a_reply(
    node: NodeClients, server: LiveServer, fake_groq: FakeGroq, http: httpx.AsyncClient
) -> None:
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    first_request = len(fake_groq.requests)
    content = "Say something over graphql-ws"

    output = await node.run(
        "graphql-ws-node.mjs",
        {
            "httpUrl": f"{server.base_url}/graphql",
            "wsUrl": server.ws_url,
            "email": unique_email("node"),
            "password": DEFAULT_PASSWORD,
            "content": content,
        },
    )

    assert len(fake_groq.requests) == first_request + 1
    upstream = fake_groq.requests[first_request]
    reply = StreamedReply(output["events"])
    assert_reply_is_what_the_model_sent(reply, upstream, content)
    assert reply.text == "".join(TOKENS)
    assert len(reply.deltas) >= 2  # streamed, not delivered as one block

    stored = await http.get(
        f"/api/v1/conversations/{output['conversationId']}/messages",
        headers={"Authorization": f"Bearer {output['token']}"},
    )
    assert stored.status_code == 200, stored.text
    assert [(row["role"], row["content"]) for row in stored.json()["data"]] == [
        ("user", content),
        ("assistant", "".join(TOKENS)),
    ]
