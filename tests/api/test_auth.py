"""Accounts and credentials through the public interface: REST, GraphQL over HTTP and websockets."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import bcrypt
import jwt
import pytest
import websockets
from sqlalchemy import inspect, literal_column, select, table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.security import bcrypt_cost
from tests.conftest import TEST_JWT_SECRET, LiveServer
from tests.support.api import Api, User, unique_email

ME = "query { me { id email createdAt } }"
REGISTER = """
mutation ($email: String!, $password: String!) {
  register(input: {email: $email, password: $password}) {
    accessToken tokenType expiresIn user { id email }
  }
}"""
LOGIN = """
mutation ($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken tokenType expiresIn user { id } }
}"""


# --- sign-up, log-in, me ---------------------------------------------------------------------


async def test_rest_register_login_me(api: Api) -> None:
    email = unique_email()
    registered = await api.http.post(
        "/api/v1/auth/register", json={"email": email, "password": "s3cret-pass"}
    )
    assert registered.status_code == 201
    body = registered.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    assert set(body) >= {"access_token", "token_type", "expires_in"}

    login = await api.http.post(
        "/api/v1/auth/login", json={"email": email.upper(), "password": "s3cret-pass"}
    )
    assert login.status_code == 200
    token = login.json()["access_token"]
    me = await api.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == email


async def test_graphql_register_login_me(api: Api) -> None:
    email = unique_email()
    registered = await api.gql(REGISTER, {"email": email, "password": "s3cret-pass"})
    payload = registered["register"]
    assert payload["tokenType"] == "bearer"
    assert payload["user"]["email"] == email
    logged_in = await api.gql(LOGIN, {"email": email, "password": "s3cret-pass"})
    assert logged_in["login"]["user"]["id"] == payload["user"]["id"]
    me = await api.gql(ME, token=logged_in["login"]["accessToken"])
    assert me["me"]["id"] == payload["user"]["id"]
    assert me["me"]["email"] == email


@pytest.mark.parametrize("variant", [str.upper, str.title, lambda e: "  " + e + " "])
async def test_duplicate_email_in_any_case_is_refused(api: Api, variant: Any) -> None:
    user = await api.register()
    again = await api.http.post(
        "/api/v1/auth/register", json={"email": variant(user.email), "password": "another-pass"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "conflict_error"
    error = await api.gql_error(REGISTER, {"email": variant(user.email), "password": "x" * 10})
    assert error["extensions"]["code"] == "CONFLICT"


async def test_wrong_password_and_unknown_email_answer_identically(api: Api) -> None:
    user = await api.register()
    wrong = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "not-the-password"}
    )
    unknown = await api.http.post(
        "/api/v1/auth/login", json={"email": unique_email(), "password": "not-the-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    gql_wrong = await api.gql_error(LOGIN, {"email": user.email, "password": "nope-nope"})
    gql_unknown = await api.gql_error(LOGIN, {"email": unique_email(), "password": "nope-nope"})
    assert gql_wrong["message"] == gql_unknown["message"]
    assert gql_wrong["extensions"] == gql_unknown["extensions"] == {"code": "UNAUTHENTICATED"}


def _fullwidth(text: str) -> str:
    """ASCII letters and digits as their fullwidth forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in text)


async def test_lookalike_emails_are_one_account(api: Api) -> None:
    local = f"ade-{uuid.uuid4().hex[:8]}"
    user = await api.register(email=f"{_fullwidth(local.upper())}@Example.test")
    me = await api.http.get("/api/v1/auth/me", headers=user.headers)
    assert me.json()["email"] == f"{local}@example.test"
    for variant in (f"{local}@example.test", f"{local.upper()}@EXAMPLE.TEST"):
        login = await api.http.post(
            "/api/v1/auth/login", json={"email": variant, "password": user.password}
        )
        assert login.status_code == 200, (variant, login.text)
        again = await api.http.post(
            "/api/v1/auth/register", json={"email": variant, "password": "another-pass"}
        )
        assert again.status_code == 409, variant

    composed = f"ren\u00e9-{uuid.uuid4().hex[:8]}@example.test"
    await api.register(email=composed)
    decomposed = composed.replace("\u00e9", "e\u0301")
    assert decomposed != composed
    again = await api.http.post(
        "/api/v1/auth/register", json={"email": decomposed, "password": "another-pass"}
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    "invisible",
    ["\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u3164", "\x07", "\ufe0f"],
)
async def test_emails_with_invisible_characters_are_refused(api: Api, invisible: str) -> None:
    user = await api.register()
    name, _, domain = user.email.partition("@")
    lookalike = f"{name}{invisible}@{domain}"
    response = await api.http.post(
        "/api/v1/auth/register", json={"email": lookalike, "password": "another-pass"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == "Email is not a valid address"
    error = await api.gql_error(REGISTER, {"email": lookalike, "password": "another-pass"})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    login = await api.http.post(
        "/api/v1/auth/login", json={"email": lookalike, "password": user.password}
    )
    assert login.status_code == 401


async def _stored_cost(owner_engine: AsyncEngine, email: str) -> int:
    async with owner_engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT password_hash FROM users WHERE email = :e"), {"e": email}
            )
        ).scalar_one()
    cost = bcrypt_cost(stored)
    assert cost is not None
    return cost


async def test_log_in_rehashes_a_password_stored_at_another_cost(
    api: Api, server: LiveServer, owner_engine: AsyncEngine
) -> None:
    rounds = server.settings.bcrypt_rounds
    user = await api.register()
    assert await _stored_cost(owner_engine, user.email) == rounds
    older = bcrypt.hashpw(user.password.encode(), bcrypt.gensalt(rounds + 1)).decode()
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET password_hash = :h WHERE email = :e"),
            {"h": older, "e": user.email},
        )

    wrong = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "not-the-password"}
    )
    assert wrong.status_code == 401
    assert await _stored_cost(owner_engine, user.email) == rounds + 1  # nothing to rehash with

    right = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert right.status_code == 200
    assert await _stored_cost(owner_engine, user.email) == rounds
    again = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert again.status_code == 200  # the new hash holds the same password


LONG_ASCII = "a" * 73  # one byte over bcrypt's limit
LONG_EMOJI = "😀" * 19  # 76 bytes in UTF-8, 19 characters


@pytest.mark.parametrize("password", [LONG_ASCII, LONG_EMOJI], ids=["73-bytes", "76-bytes-emoji"])
async def test_overlong_passwords_are_bad_input_at_register_and_login(
    api: Api, password: str
) -> None:
    assert len(password.encode()) > 72
    email = unique_email()
    rest = await api.http.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert rest.status_code == 422
    assert "72 bytes" in rest.json()["error"]["message"]
    error = await api.gql_error(REGISTER, {"email": email, "password": password})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    # Nothing was created by the refused attempts: the email is still free.
    assert (await api.register(email=email)).email == email

    user = await api.register()
    rest_login = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": password}
    )
    assert rest_login.status_code == 422
    error = await api.gql_error(LOGIN, {"email": user.email, "password": password})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_72_byte_password_works(api: Api) -> None:
    password = "😀" * 18  # exactly 72 bytes
    user = await api.register(password=password)
    login = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": password}
    )
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("email", "password"),
    [("not-an-email", "long-enough"), (unique_email(), "short"), ("", "long-enough")],
)
async def test_invalid_registration_is_refused(api: Api, email: str, password: str) -> None:
    response = await api.http.post(
        "/api/v1/auth/register", json={"email": email, "password": password}
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- tokens ----------------------------------------------------------------------------------


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user: User, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user.id,
        "iat": now,
        "exp": now + 600,
        "iss": "conversation-api",
        "aud": "conversation-api",
        "jti": uuid.uuid4().hex,
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _hs256(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256", headers=headers)


def _bad_tokens(user: User) -> dict[str, str]:
    valid = _hs256(_claims(user))
    head, _, signature = valid.split(".")
    tampered_body = _b64({**_claims(user), "sub": str(uuid.uuid4())})
    return {
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user))}.",
        "hs512": jwt.encode(_claims(user), TEST_JWT_SECRET, algorithm="HS512"),
        "expired": _hs256(_claims(user, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "missing-exp": _hs256(_claims(user, exp=None)),
        "missing-aud": _hs256(_claims(user, aud=None)),
        "missing-iat": _hs256(_claims(user, iat=None)),
        "missing-sub": _hs256(_claims(user, sub=None)),
        "wrong-aud": _hs256(_claims(user, aud="someone-else")),
        "wrong-iss": _hs256(_claims(user, iss="someone-else")),
        "crit-header": _hs256(_claims(user), headers={"crit": ["exp"]}),
        "other-key": jwt.encode(_claims(user), "x" * 48, algorithm="HS256"),
        "tampered": f"{head}.{tampered_body}.{signature}",
        "garbage": "not.a.jwt",
        "latin1-garbage": "\u00ff\u00fe.\u00e9.x",
        "10kb": _hs256(_claims(user, pad="x" * 10_000)),
        "non-uuid-sub": _hs256(_claims(user, sub="admin")),
    }


# Minting the HS512 token with our (HS256-sized) secret is the point of that case.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_every_bad_token_is_unauthenticated_never_500(api: Api) -> None:
    user = await api.register()
    # The well-formed reference token is accepted: the bad ones fail for their defect alone.
    assert (await api.gql(ME, token=_hs256(_claims(user))))["me"]["id"] == user.id
    for name, token in _bad_tokens(user).items():
        header = f"Bearer {token}".encode("latin-1")  # non-ASCII bytes travel as sent
        rest = await api.http.get("/api/v1/auth/me", headers={"Authorization": header})
        assert rest.status_code == 401, (name, rest.text)
        assert rest.json()["error"]["type"] == "authentication_error", name
        response = await api.http.post(
            "/graphql", json={"query": ME}, headers={"Authorization": header}
        )
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED", (name, error)


async def test_missing_or_malformed_authorization_header(api: Api) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await api.http.get("/api/v1/auth/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


async def test_token_of_a_deleted_user_is_refused(api: Api, owner_engine: AsyncEngine) -> None:
    user = await api.register()
    async with owner_engine.begin() as connection:
        await connection.execute(text("DELETE FROM users WHERE email = :e"), {"e": user.email})
    response = await api.http.get("/api/v1/auth/me", headers=user.headers)
    assert response.status_code == 401


# --- API keys --------------------------------------------------------------------------------

CREATE_KEY = """mutation ($name: String!) {
  createApiKey(name: $name) { secret apiKey { id name prefix createdAt lastUsedAt revokedAt } }
}"""
KEYS = "query { apiKeys { id name prefix lastUsedAt revokedAt } }"
REVOKE_KEY = "mutation ($id: ID!) { revokeApiKey(id: $id) }"


async def test_api_key_create_use_revoke(api: Api, owner_engine: AsyncEngine) -> None:
    user = await api.register()
    created = (await api.gql(CREATE_KEY, {"name": "ci"}, user=user))["createApiKey"]
    secret, key = created["secret"], created["apiKey"]
    assert secret.startswith(key["prefix"])
    assert key["lastUsedAt"] is None and key["revokedAt"] is None

    # Stored only as a hash: the secret (or the part of it past the visible prefix) appears in
    # no column of any row of any table.
    assert await values_containing(owner_engine, secret_parts(secret, key["prefix"])) == []

    # Usable wherever a JWT is: REST, GraphQL over HTTP.
    me = await api.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["id"] == user.id
    assert (await api.gql(ME, token=secret))["me"]["id"] == user.id
    listed = (await api.gql(KEYS, user=user))["apiKeys"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert listed[0]["lastUsedAt"] is not None
    # Shown once: no field of the listing (all of ApiKey's, asked for) nor REST's carries it.
    every_field = await api.gql('query { __type(name: "ApiKey") { fields { name } } }')
    names = " ".join(field["name"] for field in every_field["__type"]["fields"])
    full_listing = json.dumps(await api.gql(f"query {{ apiKeys {{ {names} }} }}", user=user))
    rest_listing = (await api.http.get("/api/v1/api-keys", headers=user.headers)).text
    for listing in (full_listing, rest_listing):
        assert key["prefix"] in listing  # the listings are the real ones
        assert not any(part in listing for part in secret_parts(secret, key["prefix"]))

    assert (await api.gql(REVOKE_KEY, {"id": key["id"]}, user=user))["revokeApiKey"] is True
    refused = await api.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    error = await api.gql_error(ME, token=secret)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    again = await api.gql_error(REVOKE_KEY, {"id": key["id"]}, user=user)
    assert again["extensions"]["code"] == "NOT_FOUND"


def secret_parts(secret: str, prefix: str) -> list[str]:
    """The secret, and the part of it past the prefix that is shown (stored on purpose)."""
    assert secret.startswith(prefix) and len(secret) - len(prefix) >= 16
    return [secret, secret[len(prefix) :]]


async def values_containing(engine: AsyncEngine, needles: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every stored value, in every table, that contains one of `needles`."""
    found = []
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        for name in tables:
            result = await connection.execute(select(literal_column("*")).select_from(table(name)))
            for row in result.mappings():
                for column, value in row.items():
                    stored = value.hex() if isinstance(value, bytes) else str(value)
                    if any(needle in stored for needle in needles):
                        found.append((name, column))
    return found


async def test_api_keys_are_private(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    key = (await api.gql(CREATE_KEY, {"name": "alice"}, user=alice))["createApiKey"]["apiKey"]
    assert (await api.gql(KEYS, user=bob))["apiKeys"] == []
    error = await api.gql_error(REVOKE_KEY, {"id": key["id"]}, user=bob)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert len((await api.gql(KEYS, user=alice))["apiKeys"]) == 1


async def test_rest_api_keys(api: Api) -> None:
    user = await api.register()
    created = await api.http.post("/api/v1/api-keys", json={"name": "rest"}, headers=user.headers)
    assert created.status_code == 201
    secret = created.json()["secret"]
    listed = await api.http.get("/api/v1/api-keys", headers=user.headers)
    assert [k["name"] for k in listed.json()] == ["rest"]
    deleted = await api.http.delete(
        f"/api/v1/api-keys/{created.json()['id']}", headers=user.headers
    )
    assert deleted.status_code == 204
    refused = await api.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    blank = await api.http.post("/api/v1/api-keys", json={"name": "  "}, headers=user.headers)
    assert blank.status_code == 422


async def test_an_api_key_cannot_manage_api_keys_so_none_outlives_its_revocation(
    api: Api,
) -> None:
    """Key management needs an interactive log-in: a key cannot mint children that would
    survive its revocation (nor list or revoke its owner's other keys)."""
    user = await api.register()
    parent = (await api.gql(CREATE_KEY, {"name": "parent"}, user=user))["createApiKey"]
    sibling = (await api.gql(CREATE_KEY, {"name": "sibling"}, user=user))["createApiKey"]
    as_key = {"Authorization": f"Bearer {parent['secret']}"}

    rest_create = await api.http.post("/api/v1/api-keys", json={"name": "child"}, headers=as_key)
    rest_list = await api.http.get("/api/v1/api-keys", headers=as_key)
    rest_revoke = await api.http.delete(
        f"/api/v1/api-keys/{sibling['apiKey']['id']}", headers=as_key
    )
    for response in (rest_create, rest_list, rest_revoke):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["type"] == "permission_error"
    for query, variables in (
        (CREATE_KEY, {"name": "child"}),
        (KEYS, {}),
        (REVOKE_KEY, {"id": sibling["apiKey"]["id"]}),
    ):
        error = await api.gql_error(query, variables, token=parent["secret"])
        assert error["extensions"]["code"] == "FORBIDDEN", error
    # The key still works for everything else.
    assert (await api.gql(ME, token=parent["secret"]))["me"]["id"] == user.id

    await api.gql(REVOKE_KEY, {"id": parent["apiKey"]["id"]}, user=user)
    keys = (await api.gql(KEYS, user=user))["apiKeys"]
    # Nothing was created through the key, and the sibling was not revoked through it.
    assert sorted((k["name"], k["revokedAt"] is None) for k in keys) == [
        ("parent", False),
        ("sibling", True),
    ]
    assert (await api.http.get("/api/v1/auth/me", headers=as_key)).status_code == 401


# --- websockets ------------------------------------------------------------------------------


async def _close_code(
    server: LiveServer,
    subprotocol: str,
    payload: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> int | None:
    async with websockets.connect(
        server.ws_url,
        subprotocols=[websockets.Subprotocol(subprotocol)],
        additional_headers=headers or {},
    ) as ws:
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await ws.send(json.dumps(message))
        try:
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "connection_ack":
                    return None
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_websocket_without_valid_credentials_is_closed_4403(
    api: Api, server: LiveServer, subprotocol: str
) -> None:
    user = await api.register()
    assert await _close_code(server, subprotocol, None) == 4403
    assert await _close_code(server, subprotocol, {}) == 4403
    assert await _close_code(server, subprotocol, {"Authorization": "Bearer nope"}) == 4403
    assert await _close_code(server, subprotocol, {"token": "x.y.z"}) == 4403
    # Each accepted form is acknowledged.
    for payload in (
        {"Authorization": f"Bearer {user.token}"},
        {"authorization": f"Bearer {user.token}"},
        {"token": user.token},
    ):
        assert await _close_code(server, subprotocol, payload) is None, payload
    upgrade_header = {"Authorization": f"Bearer {user.token}"}
    assert await _close_code(server, subprotocol, None, headers=upgrade_header) is None
