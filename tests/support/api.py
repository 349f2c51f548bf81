from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.test"


class GraphQLErrors(AssertionError):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("errors"))
        self.body = body

    @property
    def codes(self) -> list[str]:
        return [error["extensions"]["code"] for error in self.body["errors"]]


class Api:
    """What a client does: REST calls and GraphQL over HTTP against the live server."""

    def __init__(self, http: httpx.AsyncClient, ws_url: str) -> None:
        self.http = http
        self.ws_url = ws_url

    async def register(self, email: str | None = None, password: str = DEFAULT_PASSWORD) -> User:
        email = email or unique_email()
        response = await self.http.post(
            "/api/v1/auth/register", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.text
        token = response.json()["access_token"]
        me = await self.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        return User(id=me.json()["id"], email=email.lower(), password=password, token=token)

    async def graphql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        user: User | None = None,
    ) -> dict[str, Any]:
        """The full response body; asserts the HTTP status is 200."""
        headers = {}
        token = token or (user.token if user else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        user: User | None = None,
    ) -> dict[str, Any]:
        """`data` of a response that must have no errors."""
        body = await self.graphql(query, variables, token=token, user=user)
        if body.get("errors"):
            raise GraphQLErrors(body)
        data: dict[str, Any] = body["data"]
        return data

    async def gql_error(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        user: User | None = None,
    ) -> dict[str, Any]:
        """The single error of a response that must fail."""
        body = await self.graphql(query, variables, token=token, user=user)
        assert body.get("errors"), body
        assert len(body["errors"]) == 1, body
        error: dict[str, Any] = body["errors"][0]
        return error

    async def messages(self, user: User, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's messages over REST, oldest first (up to 100)."""
        response = await self.http.get(
            f"/api/v1/conversations/{conversation_id}/messages",
            params={"limit": 100},
            headers=user.headers,
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["data"]
        return rows

    async def create_conversation(self, user: User, **fields: Any) -> dict[str, Any]:
        response = await self.http.post("/api/v1/conversations", json=fields, headers=user.headers)
        assert response.status_code == 201, response.text
        conversation: dict[str, Any] = response.json()
        return conversation
