"""One conversations client, two transports: the behaviour suite runs unchanged over both.

Errors come back as `ApiError(code)` with the GraphQL code; REST statuses are mapped onto the
same codes (404 → NOT_FOUND, 422 → BAD_USER_INPUT, ...), so a test asserts one behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tests.support.api import Api, User

_REST_CODES = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 409: "CONFLICT", 422: "BAD_USER_INPUT"}


class ApiError(Exception):
    def __init__(self, code: str, detail: Any = None) -> None:
        super().__init__(code, detail)
        self.code = code


@dataclass
class Page:
    items: list[dict[str, Any]]
    cursor: str | None  # where the next page starts; None when there is none


def _normal_conversation(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": node["id"],
        "title": node["title"],
        "model": node["model"],
        "system_prompt": node.get("systemPrompt", node.get("system_prompt")),
        "updated_at": node.get("updatedAt", node.get("updated_at")),
    }


class ConversationsClient(Protocol):
    name: str

    async def create(self, user: User, **fields: Any) -> dict[str, Any]: ...
    async def get(self, user: User, conversation_id: str) -> dict[str, Any]: ...
    async def update(self, user: User, conversation_id: str, **fields: Any) -> dict[str, Any]: ...
    async def delete(self, user: User, conversation_id: str) -> None: ...
    async def list(self, user: User, first: int, after: str | None = None) -> Page: ...
    async def messages(
        self, user: User, conversation_id: str, first: int, after: str | None = None
    ) -> Page: ...


class RestConversations:
    name = "rest"

    def __init__(self, api: Api) -> None:
        self.http = api.http

    @staticmethod
    def _check(response: Any, expected: int = 200) -> Any:
        if response.status_code != expected:
            code = _REST_CODES.get(response.status_code, str(response.status_code))
            raise ApiError(code, response.text)
        return response.json() if response.content else None

    async def create(self, user: User, **fields: Any) -> dict[str, Any]:
        body = self._check(
            await self.http.post("/api/v1/conversations", json=fields, headers=user.headers), 201
        )
        return _normal_conversation(body)

    async def get(self, user: User, conversation_id: str) -> dict[str, Any]:
        url = f"/api/v1/conversations/{conversation_id}"
        return _normal_conversation(self._check(await self.http.get(url, headers=user.headers)))

    async def update(self, user: User, conversation_id: str, **fields: Any) -> dict[str, Any]:
        url = f"/api/v1/conversations/{conversation_id}"
        response = await self.http.patch(url, json=fields, headers=user.headers)
        return _normal_conversation(self._check(response))

    async def delete(self, user: User, conversation_id: str) -> None:
        url = f"/api/v1/conversations/{conversation_id}"
        self._check(await self.http.delete(url, headers=user.headers), 204)

    async def list(self, user: User, first: int, after: str | None = None) -> Page:
        params: dict[str, Any] = {"limit": first}
        if after is not None:
            params["cursor"] = after
        body = self._check(
            await self.http.get("/api/v1/conversations", params=params, headers=user.headers)
        )
        return Page([_normal_conversation(c) for c in body["data"]], body["next_cursor"])

    async def messages(
        self, user: User, conversation_id: str, first: int, after: str | None = None
    ) -> Page:
        params: dict[str, Any] = {"limit": first}
        if after is not None:
            params["cursor"] = after
        url = f"/api/v1/conversations/{conversation_id}/messages"
        body = self._check(await self.http.get(url, params=params, headers=user.headers))
        return Page(body["data"], body["next_cursor"])


CONVERSATION_FIELDS = "id title model systemPrompt createdAt updatedAt"
MESSAGE_FIELDS = (
    "id conversationId role content tokenCount finishReason latencyMs model metadata createdAt"
)


class GraphQLConversations:
    name = "graphql"

    def __init__(self, api: Api) -> None:
        self.api = api

    async def _run(self, user: User, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = await self.api.graphql(query, variables, user=user)
        if body.get("errors"):
            raise ApiError(body["errors"][0]["extensions"]["code"], body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def create(self, user: User, **fields: Any) -> dict[str, Any]:
        query = f"""mutation ($input: CreateConversationInput) {{
            createConversation(input: $input) {{ {CONVERSATION_FIELDS} }} }}"""
        data = await self._run(user, query, {"input": _camel(fields)})
        return _normal_conversation(data["createConversation"])

    async def get(self, user: User, conversation_id: str) -> dict[str, Any]:
        query = f"query ($id: ID!) {{ conversation(id: $id) {{ {CONVERSATION_FIELDS} }} }}"
        data = await self._run(user, query, {"id": conversation_id})
        if data["conversation"] is None:
            raise ApiError("NOT_FOUND")
        return _normal_conversation(data["conversation"])

    async def update(self, user: User, conversation_id: str, **fields: Any) -> dict[str, Any]:
        query = f"""mutation ($id: ID!, $input: UpdateConversationInput!) {{
            updateConversation(id: $id, input: $input) {{ {CONVERSATION_FIELDS} }} }}"""
        data = await self._run(user, query, {"id": conversation_id, "input": _camel(fields)})
        return _normal_conversation(data["updateConversation"])

    async def delete(self, user: User, conversation_id: str) -> None:
        data = await self._run(
            user, "mutation ($id: ID!) { deleteConversation(id: $id) }", {"id": conversation_id}
        )
        assert data["deleteConversation"] is True

    async def list(self, user: User, first: int, after: str | None = None) -> Page:
        query = f"""query ($first: Int!, $after: String) {{
            conversations(first: $first, after: $after) {{
                edges {{ cursor node {{ {CONVERSATION_FIELDS} }} }}
                pageInfo {{ hasNextPage endCursor }} }} }}"""
        data = (await self._run(user, query, {"first": first, "after": after}))["conversations"]
        items = [_normal_conversation(edge["node"]) for edge in data["edges"]]
        info = data["pageInfo"]
        if data["edges"]:
            assert info["endCursor"] == data["edges"][-1]["cursor"]
        return Page(items, info["endCursor"] if info["hasNextPage"] else None)

    async def messages(
        self, user: User, conversation_id: str, first: int, after: str | None = None
    ) -> Page:
        query = f"""query ($id: ID!, $first: Int!, $after: String) {{
            conversation(id: $id) {{ messages(first: $first, after: $after) {{
                edges {{ cursor node {{ {MESSAGE_FIELDS} }} }}
                pageInfo {{ hasNextPage endCursor }} }} }} }}"""
        data = await self._run(user, query, {"id": conversation_id, "first": first, "after": after})
        if data["conversation"] is None:
            raise ApiError("NOT_FOUND")
        connection = data["conversation"]["messages"]
        items = [_snake_message(edge["node"]) for edge in connection["edges"]]
        info = connection["pageInfo"]
        return Page(items, info["endCursor"] if info["hasNextPage"] else None)


def _camel(fields: dict[str, Any]) -> dict[str, Any]:
    names = {"system_prompt": "systemPrompt"}
    return {names.get(key, key): value for key, value in fields.items()}


def _snake_message(node: dict[str, Any]) -> dict[str, Any]:
    names = {
        "conversationId": "conversation_id",
        "tokenCount": "token_count",
        "finishReason": "finish_reason",
        "latencyMs": "latency_ms",
        "createdAt": "created_at",
    }
    message = {names.get(key, key): value for key, value in node.items()}
    message["role"] = message["role"].lower()
    return message


def clients(api: Api) -> dict[str, ConversationsClient]:
    return {"graphql": GraphQLConversations(api), "rest": RestConversations(api)}
