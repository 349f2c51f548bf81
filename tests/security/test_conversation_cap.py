"""Conversations per user are capped (USER_MAX_CONVERSATIONS): past the cap a creation is
`BAD_USER_INPUT` / 422 and stores nothing; deleting one makes room again. Conversations created
earlier in the same GraphQL operation count.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.test_write_limits import aliased_creations, conversation_count
from tests.support.api import Api

CAP = 3
pytestmark = pytest.mark.usefixtures("server_survives")


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"user_max_conversations": CAP}


async def test_creations_past_the_cap_are_refused_until_one_is_deleted(api: Api) -> None:
    user = await api.register()
    ids = [(await api.create_conversation(user))["id"] for _ in range(CAP)]
    refused = await api.http.post("/api/v1/conversations", json={}, headers=user.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"] == f"At most {CAP} conversations per account"
    error = await api.gql_error("mutation { createConversation { id } }", user=user)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert await conversation_count(api, user) == CAP

    deleted = await api.http.delete(f"/api/v1/conversations/{ids[0]}", headers=user.headers)
    assert deleted.status_code == 204
    await api.create_conversation(user)
    assert await conversation_count(api, user) == CAP
    other = await api.register()
    await api.create_conversation(other)  # per user


async def test_aliased_creations_count_toward_the_cap(api: Api) -> None:
    user = await api.register()
    body = await api.graphql(aliased_creations(CAP + 2), {"t": "a", "p": "b"}, user=user)
    assert body["data"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}
    assert await conversation_count(api, user) == 0
    body = await api.graphql(aliased_creations(CAP), {"t": "a", "p": "b"}, user=user)
    assert "errors" not in body, body
    assert await conversation_count(api, user) == CAP
