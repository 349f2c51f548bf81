"""A production server: no introspection, no field suggestions, no GraphiQL, HSTS, and
unexpected errors masked on every transport.

The unexpected error is real, not staged in the code: the database stops letting the server
read one table (PostgreSQL: the application role loses SELECT on it; SQLite: the table is
renamed away), as a bad migration or a broken grant would in production. The driver's message
names the table and the statement; clients must see none of it, only a request id to quote.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import APP_ROLE
from tests.support.api import Api, User
from tests.support.streams import transports

pytestmark = pytest.mark.usefixtures("server_survives")

# Words of the database error that must not reach a client.
LEAKS = ("permission", "denied", "relation", "no such table", "select", "sqlalchemy", "asyncpg")


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"app_env": "production", "jwt_secret": secrets.token_urlsafe(48)}


@pytest.fixture
async def user(api: Api) -> User:
    return await api.register()


async def test_introspection_is_off(api: Api, user: User) -> None:
    for query in (
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Conversation") { fields { name } } }',
    ):
        body = await api.graphql(query, user=user)
        assert body["data"] is None, body
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "introspection" in body["errors"][0]["message"].lower()
    # Asking a value for its type name is not introspection, and clients rely on it.
    assert await api.gql("{ __typename }", user=user) == {"__typename": "Query"}


@pytest.mark.parametrize(
    "query",
    [
        "{ conversatoins(first: 1) { edges { cursor } } }",
        "{ conversations(frist: 1) { edges { cursor } } }",
        "{ conversations { edges { nod { id } } } }",
        "{ conversations { edges { node { ... on Conversaton { id } } } } }",
        'mutation { createConversation(input: {titel: "x"}) { id } }',
    ],
    ids=["field", "argument", "nested-field", "type", "input-field"],
)
async def test_no_suggestions_reveal_the_schema(api: Api, user: User, query: str) -> None:
    body = await api.graphql(query, user=user)
    messages = " ".join(error["message"] for error in body["errors"])
    assert "Did you mean" not in messages, messages
    assert not any(word in messages for word in ("'first'", "'node'", "'Conversation'", "'title'"))


async def test_graphiql_and_the_schema_playground_are_off(api: Api) -> None:
    page = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 404


async def test_hsts_is_sent(api: Api) -> None:
    response = await api.http.get("/healthz")
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


@pytest.fixture
async def conversations_unreadable(
    owner_engine: AsyncEngine, server_survives: None
) -> AsyncIterator[None]:
    """The server cannot read `conversations` until the test ends (and is checked after)."""
    async with owner_engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            revoke = f'REVOKE SELECT ON conversations FROM "{APP_ROLE}"'  # noqa: S608  (constant)
            await connection.execute(text(revoke))
            restore = f'GRANT SELECT ON conversations TO "{APP_ROLE}"'
        else:
            await connection.execute(text("ALTER TABLE conversations RENAME TO hidden_table"))
            restore = "ALTER TABLE hidden_table RENAME TO conversations"
    try:
        yield
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(text(restore))


def assert_nothing_leaks(raw: str) -> None:
    lowered = raw.lower()
    assert not any(word in lowered for word in LEAKS), raw


@pytest.mark.usefixtures("conversations_unreadable")
async def test_an_unexpected_error_is_masked_everywhere(api: Api, user: User) -> None:
    rest = await api.http.get("/api/v1/conversations", headers=user.headers)
    assert rest.status_code == 500
    assert rest.json() == {"error": {"type": "api_error", "message": "Internal server error"}}
    assert rest.headers["x-request-id"]

    response = await api.http.post(
        "/graphql", json={"query": "{ conversations { edges { cursor } } }"}, headers=user.headers
    )
    assert_nothing_leaks(response.text)
    (error,) = response.json()["errors"]
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR",
        "requestId": response.headers["x-request-id"],  # what a user quotes to support
    }

    conversation_id = "01890a5d-ac96-774b-bcce-b302099a8057"
    sse = await transports(api.http, api.ws_url)["sse"].stream(user, conversation_id, "hello")
    assert sse.error is not None
    assert sse.error["status"] == 500, sse.error
    assert_nothing_leaks(str(sse.error["body"]))
    over_ws = await transports(api.http, api.ws_url)["graphql-transport-ws"].stream(
        user, conversation_id, "hello"
    )
    assert over_ws.error is not None
    assert over_ws.error["code"] == "INTERNAL_SERVER_ERROR", over_ws.error
    assert_nothing_leaks(str(over_ws.error["errors"]))
