"""Conversations: one behaviour suite, run over GraphQL and over REST."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import LiveServer
from tests.support.api import Api, User
from tests.support.conversations import ApiError, ConversationsClient, clients
from tests.support.streams import transports


@pytest.fixture(params=["graphql", "rest"])
def conversations(request: pytest.FixtureRequest, api: Api) -> ConversationsClient:
    return clients(api)[request.param]


async def _all_ids(client: ConversationsClient, user: User) -> list[str]:
    page = await client.list(user, first=100)
    return [item["id"] for item in page.items]


async def test_crud(conversations: ConversationsClient, api: Api) -> None:
    user = await api.register()
    created = await conversations.create(user)
    assert created["title"] == "New conversation"
    assert created["model"] == "llama-3.1-8b-instant"
    assert created["system_prompt"] is None

    full = await conversations.create(
        user, title="Trip", model="openai/gpt-oss-20b", system_prompt="Be brief."
    )
    assert (full["title"], full["model"], full["system_prompt"]) == (
        "Trip",
        "openai/gpt-oss-20b",
        "Be brief.",
    )
    assert await conversations.get(user, full["id"]) == full

    renamed = await conversations.update(user, full["id"], title="Trip to Lisbon")
    assert renamed["title"] == "Trip to Lisbon"
    assert renamed["model"] == "openai/gpt-oss-20b"  # untouched fields stay
    assert renamed["system_prompt"] == "Be brief."
    assert renamed["updated_at"] > full["updated_at"]

    switched = await conversations.update(user, full["id"], model="llama-3.3-70b-versatile")
    assert switched["model"] == "llama-3.3-70b-versatile"
    cleared = await conversations.update(user, full["id"], system_prompt=None)
    assert cleared["system_prompt"] is None
    assert cleared["title"] == "Trip to Lisbon"

    assert set(await _all_ids(conversations, user)) == {created["id"], full["id"]}
    await conversations.delete(user, full["id"])
    with pytest.raises(ApiError) as second_delete:
        await conversations.delete(user, full["id"])
    assert second_delete.value.code == "NOT_FOUND"
    with pytest.raises(ApiError) as gone:
        await conversations.get(user, full["id"])
    assert gone.value.code == "NOT_FOUND"
    assert await _all_ids(conversations, user) == [created["id"]]


INVALID_CREATES: dict[str, dict[str, Any]] = {
    "title-too-long": {"title": "t" * 201},
    "blank-title": {"title": "   "},
    "system-prompt-too-long": {"system_prompt": "p" * 32_001},
    "unknown-model": {"model": "gpt-5"},
    "url-as-model": {"model": "https://evil.example/v1"},
    "empty-model": {"model": ""},
}


@pytest.mark.parametrize("fields", INVALID_CREATES.values(), ids=INVALID_CREATES.keys())
async def test_invalid_input_is_refused_and_changes_nothing(
    conversations: ConversationsClient, api: Api, fields: dict[str, Any]
) -> None:
    user = await api.register()
    existing = await conversations.create(user, title="Keep me", system_prompt="Original")
    with pytest.raises(ApiError) as created:
        await conversations.create(user, **fields)
    assert created.value.code == "BAD_USER_INPUT"
    with pytest.raises(ApiError) as updated:
        await conversations.update(user, existing["id"], **fields)
    assert updated.value.code == "BAD_USER_INPUT"
    assert await _all_ids(conversations, user) == [existing["id"]]
    assert await conversations.get(user, existing["id"]) == existing


async def test_limits_are_inclusive(conversations: ConversationsClient, api: Api) -> None:
    user = await api.register()
    created = await conversations.create(user, title="t" * 200, system_prompt="p" * 32_000)
    assert len(created["title"]) == 200
    assert len(created["system_prompt"]) == 32_000


async def test_null_title_or_model_in_an_update_is_refused(
    conversations: ConversationsClient, api: Api
) -> None:
    user = await api.register()
    conversation = await conversations.create(user, title="Stay")
    for field in ("title", "model"):
        with pytest.raises(ApiError) as error:
            await conversations.update(user, conversation["id"], **{field: None})
        assert error.value.code == "BAD_USER_INPUT"
    assert await conversations.get(user, conversation["id"]) == conversation


@pytest.mark.parametrize("first", [0, -1, 101, 10_000])
async def test_page_size_out_of_range(
    conversations: ConversationsClient, api: Api, first: int
) -> None:
    user = await api.register()
    conversation = await conversations.create(user)
    with pytest.raises(ApiError) as listing:
        await conversations.list(user, first=first)
    assert listing.value.code == "BAD_USER_INPUT"
    with pytest.raises(ApiError) as messages:
        await conversations.messages(user, conversation["id"], first=first)
    assert messages.value.code == "BAD_USER_INPUT"


@pytest.mark.parametrize("cursor", ["garbage", "Zm9v", "MTIzOm5vdC1oZXg", "=" * 10, "x" * 500])
async def test_malformed_cursor(conversations: ConversationsClient, api: Api, cursor: str) -> None:
    user = await api.register()
    conversation = await conversations.create(user)
    with pytest.raises(ApiError) as listing:
        await conversations.list(user, first=10, after=cursor)
    assert listing.value.code == "BAD_USER_INPUT"
    with pytest.raises(ApiError) as messages:
        await conversations.messages(user, conversation["id"], first=10, after=cursor)
    assert messages.value.code == "BAD_USER_INPUT"


async def test_malformed_ids(api: Api) -> None:
    user = await api.register()
    for bad in ("not-a-uuid", "1", "' OR 1=1 --"):
        error = await api.gql_error(
            "query ($id: ID!) { conversation(id: $id) { id } }", {"id": bad}, user=user
        )
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        error = await api.gql_error(
            "mutation ($id: ID!) { deleteConversation(id: $id) }", {"id": bad}, user=user
        )
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
    response = await api.http.get("/api/v1/conversations/not-a-uuid", headers=user.headers)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_pagination_is_keyset_exact_and_stable(
    conversations: ConversationsClient, api: Api
) -> None:
    user = await api.register()
    made = [await conversations.create(user, title=f"c{i:02}") for i in range(45)]
    newest_first = [c["id"] for c in reversed(made)]

    first = await conversations.list(user, first=20)
    assert [c["id"] for c in first.items] == newest_first[:20]
    assert first.cursor is not None

    # Between pages: a conversation already seen is updated (moves to the front) and a new one is
    # created (also at the front). Neither may appear again or push others into a second page.
    await conversations.update(user, newest_first[3], title="touched")
    late = await conversations.create(user, title="late")

    second = await conversations.list(user, first=20, after=first.cursor)
    assert [c["id"] for c in second.items] == newest_first[20:40]
    assert second.cursor is not None
    third = await conversations.list(user, first=20, after=second.cursor)
    assert [c["id"] for c in third.items] == newest_first[40:]
    assert third.cursor is None

    seen = [c["id"] for page in (first, second, third) for c in page.items]
    assert len(seen) == len(set(seen)) == 45
    assert late["id"] not in seen
    # A fresh walk sees the new order: the late and the touched conversations lead.
    fresh = await conversations.list(user, first=3)
    assert [c["id"] for c in fresh.items] == [late["id"], newest_first[3], newest_first[0]]


async def test_another_users_conversation_is_not_found_everywhere(
    conversations: ConversationsClient, api: Api
) -> None:
    alice, bob = await api.register(), await api.register()
    mine = await conversations.create(alice, title="private")
    random_id = str(uuid.uuid4())

    outcomes: dict[str, list[str]] = {}
    for target in (mine["id"], random_id):
        codes = []
        for call in (
            conversations.get(bob, target),
            conversations.update(bob, target, title="hacked"),
            conversations.messages(bob, target, first=10),
            conversations.delete(bob, target),
        ):
            with pytest.raises(ApiError) as error:
                await call
            codes.append(error.value.code)
        outcomes[target] = codes
    # Identical answers for "exists but not yours" and "does not exist".
    assert outcomes[mine["id"]] == outcomes[random_id] == ["NOT_FOUND"] * 4
    assert mine["id"] not in await _all_ids(conversations, bob)
    assert await conversations.get(alice, mine["id"]) == mine  # untouched by Bob's attempts


async def test_unauthenticated_calls_are_refused(
    conversations: ConversationsClient, api: Api
) -> None:
    nobody = User(id="", email="", password="", token="not-a-token")
    with pytest.raises(ApiError) as error:
        await conversations.list(nobody, first=10)
    assert error.value.code == "UNAUTHENTICATED"
    with pytest.raises(ApiError) as error:
        await conversations.create(nobody)
    assert error.value.code == "UNAUTHENTICATED"


async def test_models_catalogue(api: Api) -> None:
    data = await api.gql(
        "{ models { id provider contextWindow inputPricePerMillion outputPricePerMillion } }"
    )
    models = {m["id"]: m for m in data["models"]}
    for name in (
        "llama-3.1-8b-instant",
        "llama-3.3-70b-versatile",
        "openai/gpt-oss-20b",
        "openai/gpt-oss-120b",
        "echo",
    ):
        assert name in models
    assert models["llama-3.1-8b-instant"]["contextWindow"] >= 8192
    assert models["echo"]["provider"] == "echo"
    assert all(m["inputPricePerMillion"] >= 0 for m in models.values())


async def _chat(api: Api, user: User, conversation_id: str, *questions: str) -> None:
    sse = transports(api.http, api.ws_url)["sse"]
    for question in questions:
        assert (await sse.stream(user, conversation_id, question)).error is None


async def test_messages_are_paginated_oldest_first(
    conversations: ConversationsClient, api: Api
) -> None:
    user = await api.register()
    conversation = await conversations.create(user, model="echo")
    await _chat(api, user, conversation["id"], "q1", "q2", "q3")
    first = await conversations.messages(user, conversation["id"], first=4)
    assert [m["role"] for m in first.items] == ["user", "assistant"] * 2
    assert [m["content"] for m in first.items[::2]] == ["q1", "q2"]
    assert first.cursor is not None
    rest = await conversations.messages(user, conversation["id"], first=4, after=first.cursor)
    assert [m["content"] for m in rest.items[::2]] == ["q3"]
    assert rest.cursor is None
    everything = first.items + rest.items
    assert len({m["id"] for m in everything}) == 6
    assert all(m["conversation_id"] == conversation["id"] for m in everything)
    reply = everything[1]
    assert reply["finish_reason"] == "end_turn" and reply["model"] == "echo"
    assert reply["token_count"] > 0 and reply["metadata"]["output_tokens"] > 0
    # A new message after the last cursor shows up on the next page, nothing repeats.
    await _chat(api, user, conversation["id"], "q4")
    more = await conversations.messages(user, conversation["id"], first=4, after=first.cursor)
    assert [m["content"] for m in more.items[::2]] == ["q3", "q4"]


async def test_deleting_a_conversation_removes_its_messages(
    api: Api, owner_engine: AsyncEngine
) -> None:
    user = await api.register()
    conversation = await api.create_conversation(user, model="echo")
    await _chat(api, user, str(conversation["id"]), "bye")
    response = await api.http.delete(
        f"/api/v1/conversations/{conversation['id']}", headers=user.headers
    )
    assert response.status_code == 204
    async with owner_engine.connect() as connection:
        remaining = await connection.execute(
            text("SELECT count(*) FROM messages WHERE user_id = :u"),
            {"u": user.id if connection.dialect.name != "sqlite" else user.id.replace("-", "")},
        )
        assert remaining.scalar() == 0


LIST_WITH_MESSAGES = """
query ($first: Int!) {
  conversations(first: $first) {
    edges { node {
      id title
      messages(first: 2) { edges { node { id role content } } pageInfo { hasNextPage } }
      usage { requests outputTokens }
    } }
  }
}"""


async def test_listing_conversations_with_messages_runs_a_bounded_number_of_statements(
    api: Api, server: LiveServer
) -> None:
    user = await api.register()
    for i in range(20):
        conversation = await api.create_conversation(user, model="echo", title=f"n{i}")
        await _chat(api, user, str(conversation["id"]), f"hello {i}")

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = server.app.state.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        few = await api.gql(LIST_WITH_MESSAGES, {"first": 2}, user=user)
        for_two = len(statements)
        statements.clear()
        many = await api.gql(LIST_WITH_MESSAGES, {"first": 20}, user=user)
        for_twenty = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    edges = many["conversations"]["edges"]
    assert len(few["conversations"]["edges"]) == 2 and len(edges) == 20
    assert all(len(e["node"]["messages"]["edges"]) == 2 for e in edges)
    assert all(e["node"]["usage"]["requests"] == 1 for e in edges)
    # Twenty conversations cost exactly what two do: auth, the page, one batch of messages, one
    # batch of usage (plus the RLS caller on PostgreSQL) -- never one query per conversation.
    assert for_twenty == for_two, (for_two, for_twenty)
    assert for_twenty <= 6, statements
