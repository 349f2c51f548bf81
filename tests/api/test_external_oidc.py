"""Any OIDC issuer (AUTH_JWKS_URL, AUTH_ISSUER, AUTH_AUDIENCE), with no shared secret at all:
a JWKS sprayed with made-up kids, algorithm confusion with nothing symmetric to confuse with,
linking by verified email when it is turned on, and an external user's budgets and limits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.identity_issuer import FakeIssuer, SigningKey, b64url
from tests.support.api import Api, User, unique_email
from tests.support.credentials import TRANSPORTS, accepted_over, bearer
from tests.support.streams import transports

AUDIENCE = "https://api.example.test"


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with FakeIssuer(kind="EC") as fake:
        yield fake


@pytest.fixture(scope="module")
def server_settings(issuer: FakeIssuer) -> dict[str, Any]:
    return {
        "auth_jwks_url": issuer.jwks_url,
        "auth_issuer": issuer.issuer,
        "auth_audience": AUDIENCE,
        "auth_link_verified_email": True,
        "user_daily_token_budget": 1,
        "write_rate_limit_per_user": "3/hour",
    }


def mint(issuer: FakeIssuer, **claims: Any) -> str:
    return issuer.mint(aud=[AUDIENCE, "https://issuer.example.test/userinfo"], **claims)


async def user_id(api: Api, token: str) -> str:
    response = await api.http.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def test_made_up_kids_cost_the_issuer_one_request(api: Api, issuer: FakeIssuer) -> None:
    assert await accepted_over("rest", api, mint(issuer))
    before = issuer.jwks_requests
    for _ in range(30):
        forged = mint(issuer, key=SigningKey.generate("EC"))
        assert not await accepted_over("rest", api, forged)
    assert issuer.jwks_requests - before <= 1


def _confused(issuer: FakeIssuer, form: str) -> str:
    key = issuer.signing
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    if form == "none":
        return f"{b64url({**header, 'alg': 'none'})}.{b64url(issuer.claims(aud=AUDIENCE))}."
    secret = key.public_pem if form == "pem" else b64url(key.public_jwk()).encode()
    return issuer.mint_hs256(secret, header=header, aud=AUDIENCE)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("form", ["pem", "jwk", "none"])
async def test_no_symmetric_or_unsigned_token_passes_for_the_public_key(
    api: Api, issuer: FakeIssuer, transport: str, form: str
) -> None:
    assert await accepted_over(transport, api, mint(issuer))
    assert not await accepted_over(transport, api, _confused(issuer, form))


async def test_a_verified_email_links_to_the_password_account_once(
    api: Api, issuer: FakeIssuer
) -> None:
    local = await api.register(email=unique_email("linked"))
    linked = await user_id(api, mint(issuer, email=local.email, email_verified=True))
    assert linked == local.id
    # From then on it is the same account both ways.
    login = await api.http.post(
        "/api/v1/auth/login", json={"email": local.email, "password": local.password}
    )
    assert login.status_code == 200
    assert await user_id(api, login.json()["access_token"]) == local.id
    # A second identity with the same verified address gets an account of its own.
    second = await user_id(api, mint(issuer, email=local.email, email_verified=True))
    assert second != local.id


@pytest.mark.parametrize("verified", [False, "true", None], ids=["false", "string", "absent"])
async def test_an_unverified_email_never_links(
    api: Api, issuer: FakeIssuer, verified: object
) -> None:
    local = await api.register(email=unique_email("unlinked"))
    token = mint(issuer, email=local.email, email_verified=verified)
    assert await user_id(api, token) != local.id


async def test_external_users_have_budgets_and_rate_limits(api: Api, issuer: FakeIssuer) -> None:
    token = mint(issuer, sub=str(uuid.uuid4()))
    headers = bearer(token)
    created = []
    for number in range(3):
        response = await api.http.post(
            "/api/v1/conversations", json={"title": f"c{number}", "model": "echo"}, headers=headers
        )
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    limited = await api.http.post("/api/v1/conversations", json={}, headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"

    sse = transports(api.http, api.ws_url)["sse"]
    user = User(id="", email="", password="", token=token)
    first = await sse.stream(user, created[0], "spend my budget")
    assert first.error is None
    second = await sse.stream(user, created[1], "and then some")
    assert second.error is not None
    assert second.error["status"] == 429
    assert second.error["body"]["error"]["type"] == "quota_exceeded_error"
