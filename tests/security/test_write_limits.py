"""Writes under attack: conversations created, changed and deleted, and API keys created, are
counted per user, once per service call, so 30 aliased `createConversation`s in one GraphQL
document are 30 writes, not one request. A refused write changes nothing: the GraphQL operation
that hit the limit is rolled back whole.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api, User

WRITE_LIMIT = 10
pytestmark = pytest.mark.usefixtures("server_survives")


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"write_rate_limit_per_user": f"{WRITE_LIMIT}/hour"}


def aliased_creations(count: int) -> str:
    fields = " ".join(
        f"c{n}: createConversation(input: {{title: $t, systemPrompt: $p}}) {{ id }}"
        for n in range(count)
    )
    return f"mutation ($t: String!, $p: String!) {{ {fields} }}"


async def conversation_count(api: Api, user: User) -> int:
    response = await api.http.get(
        "/api/v1/conversations", params={"limit": 100}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    return len(response.json()["data"])


async def create(api: Api, user: User) -> int:
    response = await api.http.post("/api/v1/conversations", json={}, headers=user.headers)
    if response.status_code == 429:
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert int(response.headers["retry-after"]) >= 1
    return response.status_code


async def test_thirty_aliased_creations_are_thirty_writes(api: Api) -> None:
    user = await api.register()
    body = await api.graphql(aliased_creations(30), {"t": "flood", "p": "x" * 32_000}, user=user)
    assert body["data"] is None
    codes = {error["extensions"]["code"] for error in body["errors"]}
    assert codes == {"RATE_LIMITED"}, body["errors"]
    assert await conversation_count(api, user) == 0  # the operation was rolled back whole
    # The first WRITE_LIMIT aliases spent the budget: the next single write is refused too.
    assert await create(api, user) == 429


async def test_creating_over_rest_and_graphql_shares_one_budget(api: Api) -> None:
    user, bystander = await api.register(), await api.register()
    for _ in range(WRITE_LIMIT // 2):
        assert await create(api, user) == 201
    for _ in range(WRITE_LIMIT - WRITE_LIMIT // 2):
        await api.gql("mutation { createConversation { id } }", user=user)
    assert await create(api, user) == 429
    error = await api.gql_error("mutation { createConversation { id } }", user=user)
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] >= 1
    assert await conversation_count(api, user) == WRITE_LIMIT
    assert await create(api, bystander) == 201  # per user, not per address


async def test_changes_deletes_and_api_keys_are_writes_revoking_is_not(api: Api) -> None:
    user = await api.register()
    key = await api.http.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    assert key.status_code == 201
    ids = [(await api.create_conversation(user))["id"] for _ in range(4)]
    for conversation_id in ids[:3]:
        patched = await api.http.patch(
            f"/api/v1/conversations/{conversation_id}", json={"title": "t"}, headers=user.headers
        )
        assert patched.status_code == 200
    for conversation_id in ids[:2]:
        deleted = await api.http.delete(
            f"/api/v1/conversations/{conversation_id}", headers=user.headers
        )
        assert deleted.status_code == 204
    # 1 key + 4 created + 3 changed + 2 deleted: the budget is spent.
    deleted = await api.http.delete(f"/api/v1/conversations/{ids[2]}", headers=user.headers)
    assert deleted.status_code == 429
    patched = await api.http.patch(
        f"/api/v1/conversations/{ids[3]}", json={"title": "u"}, headers=user.headers
    )
    assert patched.status_code == 429
    more = await api.http.post("/api/v1/api-keys", json={"name": "k2"}, headers=user.headers)
    assert more.status_code == 429
    revoked = await api.http.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=user.headers)
    assert revoked.status_code == 204  # revoking a leaked key never waits
