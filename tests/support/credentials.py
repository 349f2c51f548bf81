"""Presenting one credential over every transport, and telling acceptance from refusal.

Each transport refuses in its own contract form: REST `401` with the authentication error body,
GraphQL over HTTP `UNAUTHENTICATED`, both websocket protocols close 4403 at `connection_init`,
and the SSE shim `401` before any stream. `accepted_over` returns True or False and fails the
test on anything else (a 500, another status, a refusal that says more than the others do).
"""

from __future__ import annotations

import json
import uuid

import websockets

from tests.support.api import Api

TRANSPORTS = ("rest", "graphql", "graphql-transport-ws", "graphql-ws", "sse")
REFUSED_REST = {
    "error": {"type": "authentication_error", "message": "Invalid or expired credentials"}
}
REFUSED_GRAPHQL = {"message": "Invalid or expired credentials", "code": "UNAUTHENTICATED"}
FORBIDDEN_CLOSE = 4403


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def accepted_over(transport: str, api: Api, token: str) -> bool:
    if transport == "rest":
        response = await api.http.get("/api/v1/auth/me", headers=bearer(token))
        if response.status_code == 200:
            return True
        assert response.status_code == 401, response.text
        assert response.json() == REFUSED_REST, response.text
        return False
    if transport == "graphql":
        response = await api.http.post(
            "/graphql", json={"query": "{ me { id } }"}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        if not body.get("errors"):
            return True
        (error,) = body["errors"]
        assert {"message": error["message"], **error["extensions"]} == REFUSED_GRAPHQL, body
        return False
    if transport == "sse":
        # A conversation that exists nowhere: authenticated callers get 404, the others 401.
        response = await api.http.post(
            f"/api/v1/conversations/{uuid.uuid4()}/messages/stream",
            json={"content": "hello"},
            headers=bearer(token),
        )
        if response.status_code == 404:
            return True
        assert response.status_code == 401, response.text
        assert response.json() == REFUSED_REST, response.text
        return False
    return await _websocket_accepts(api.ws_url, transport, token)


async def _websocket_accepts(ws_url: str, subprotocol: str, token: str) -> bool:
    async with websockets.connect(ws_url, subprotocols=[websockets.Subprotocol(subprotocol)]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        try:
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "connection_ack":
                    return True
                assert message["type"] in ("connection_error", "ka", "ping"), message
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        assert code == FORBIDDEN_CLOSE, code
        return False
