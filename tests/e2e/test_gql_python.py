"""The Python `gql` client over websockets, with each subprotocol the server speaks.

`WebsocketsTransport` negotiates `graphql-transport-ws` (GRAPHQLWS_SUBPROTOCOL) or the legacy
`graphql-ws` (APOLLO_SUBPROTOCOL); the token goes in the `connection_init` payload.
"""

from __future__ import annotations

from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportError, TransportServerError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from tests.conftest import LiveServer
from tests.e2e.conftest import STREAM, StreamedReply, assert_reply_is_what_the_model_sent
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api

pytestmark = pytest.mark.e2e

TOKENS = ["gql", " reads", " each", " event", " as", " it", " comes", "."]
SUBPROTOCOLS = [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL]


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
async def test_gql_streams_a_reply(
    server: LiveServer, api: Api, fake_groq: FakeGroq, subprotocol: str
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    first_request = len(fake_groq.requests)
    content = f"Stream to gql over {subprotocol}"
    ws_url, token = server.ws_url, user.token
    events: list[dict[str, Any]] = []

    # --- docs/clients.md: gql ---
    transport = WebsocketsTransport(
        url=ws_url,  # "ws://127.0.0.1:8000/graphql"
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[subprotocol],
    )
    async with Client(transport=transport) as session:
        request = GraphQLRequest(
            STREAM, variable_values={"conversationId": conversation_id, "content": content}
        )
        async for result in session.subscribe(request):
            events.append(result["streamMessage"])
    # --- end of snippet ---

    assert transport.subprotocol == subprotocol  # what the server accepted
    assert len(fake_groq.requests) == first_request + 1
    reply = StreamedReply(events)
    assert_reply_is_what_the_model_sent(reply, fake_groq.requests[first_request], content)
    assert reply.text == "".join(TOKENS)


def close_code(error: BaseException | None) -> int | None:
    """The close code the server sent, wherever gql wrapped the websockets exception."""
    while error is not None:
        if isinstance(error, ConnectionClosed) and error.rcvd is not None:
            return error.rcvd.code
        error = error.__cause__ or error.__context__
    return None


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
async def test_gql_without_a_token_is_refused(server: LiveServer, subprotocol: str) -> None:
    transport = WebsocketsTransport(url=server.ws_url, subprotocols=[subprotocol])
    with pytest.raises(TransportError) as refused:
        async with Client(transport=transport):
            pass
    if subprotocol == WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL:
        assert close_code(refused.value) == 4403
    else:  # the legacy protocol says why in a connection_error message, then closes
        assert isinstance(refused.value, TransportServerError)
        assert "Forbidden" in str(refused.value)
