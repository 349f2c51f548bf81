"""Apollo Client (js/apollo-client.mjs) with the two setups docs/clients.md shows.

- `ws`: subscriptions over `GraphQLWsLink` (graphql-ws), everything else over `HttpLink`;
- `http`: `HttpLink` alone, so the subscription travels as an HTTP multipart response
  (`multipart/mixed;subscriptionSpec=1.0`), which the server offers through Strawberry.
"""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer
from tests.e2e.conftest import NodeClients, StreamedReply, assert_reply_is_what_the_model_sent
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api

pytestmark = pytest.mark.e2e

TOKENS = ["Apollo", " gets", " every", " chunk", ",", " in", " order", "."]


@pytest.mark.parametrize("link", ["ws", "http"])
async def test_apollo_client_streams_a_reply(
    node: NodeClients, server: LiveServer, api: Api, fake_groq: FakeGroq, link: str
) -> None:
    user = await api.register()
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    first_request = len(fake_groq.requests)
    content = f"Stream over Apollo's {link} link"

    output = await node.run(
        "apollo-client.mjs",
        {
            "httpUrl": f"{server.base_url}/graphql",
            "wsUrl": server.ws_url,
            "token": user.token,
            "content": content,
            "link": link,
        },
    )

    # The mutation is always one JSON response; the subscription is one multipart response
    # over HTTP, or none (it went over the websocket).
    media_types = [content_type.split(";")[0] for content_type in output["httpResponses"]]
    assert media_types == (
        ["application/json", "multipart/mixed"] if link == "http" else ["application/json"]
    )
    assert len(fake_groq.requests) == first_request + 1
    upstream = fake_groq.requests[first_request]
    reply = StreamedReply(output["events"])
    assert_reply_is_what_the_model_sent(reply, upstream, content)
    assert reply.text == "".join(TOKENS)
    assert len(reply.deltas) >= 2
    conversation = await api.gql(
        "query ($id: ID!) {"
        " conversation(id: $id) { title messages { edges { node { content } } } } }",
        {"id": output["conversationId"]},
        user=user,
    )
    assert conversation["conversation"]["title"] == f"Apollo over {link}"
    assert [
        edge["node"]["content"] for edge in conversation["conversation"]["messages"]["edges"]
    ] == [
        content,
        "".join(TOKENS),
    ]
