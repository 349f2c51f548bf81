"""Supabase Auth tokens, on every transport: the first valid one provisions a local user keyed by
`(iss, sub)`; every forged, stale or misdirected one is refused the same way everywhere.

The server is configured the way a Supabase project would configure it: `SUPABASE_URL` (the
loopback issuer in tests/fakes, which serves its JWKS at Supabase's path) and
`SUPABASE_JWT_SECRET` (the legacy shared HS256 secret, which projects keep while they move to
asymmetric keys). Tests that need the issuer's JWKS down, slow, or freshly rotated get a server
and an issuer of their own, so that what the cache already holds is known.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import (
    TEST_JWT_SECRET,
    Database,
    base_settings,
    start_server,
    stop_server,
)
from tests.fakes.groq_server import FakeGroq
from tests.fakes.identity_issuer import FakeIssuer, SigningKey, b64url
from tests.support.api import Api, User, unique_email
from tests.support.credentials import TRANSPORTS, accepted_over, bearer
from tests.support.streams import transports

LEGACY_SECRET = "legacy-supabase-jwt-secret-0123456789-abcdef"
ME = "query { me { id email } }"


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with FakeIssuer(kind="RSA", hs256_secret=LEGACY_SECRET) as fake:
        fake.publish("EC")  # a standby key: published, not yet signing
        yield fake


@pytest.fixture(autouse=True)
def _reset_issuer(issuer: FakeIssuer) -> None:
    issuer.reset()


@pytest.fixture(scope="module")
def server_settings(issuer: FakeIssuer) -> dict[str, Any]:
    return {"supabase_url": issuer.base_url, "supabase_jwt_secret": LEGACY_SECRET}


def external_user(api: Api, issuer: FakeIssuer, **claims: Any) -> User:
    sub = str(uuid.uuid4())
    email = claims.pop("email", unique_email("supa"))
    token = issuer.mint(sub=sub, email=email, **claims)
    return User(id="", email=email, password="", token=token)


async def me(api: Api, token: str) -> dict[str, Any]:
    response = await api.http.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- valid tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_supabase_token_is_accepted_on_every_transport(
    api: Api, issuer: FakeIssuer, transport: str
) -> None:
    assert await accepted_over(transport, api, issuer.mint())


async def test_the_first_token_provisions_a_user_keyed_by_issuer_and_subject(
    api: Api, issuer: FakeIssuer, owner_engine: AsyncEngine
) -> None:
    sub, email = str(uuid.uuid4()), unique_email("Ada")
    first = await me(api, issuer.mint(sub=sub, email=email.upper()))
    again = await me(api, issuer.mint(sub=sub, email=email))  # another session, same person
    assert first["id"] == again["id"]
    assert first["email"] == email.lower()
    graphql = await api.gql(ME, token=issuer.mint(sub=sub, email=email))
    assert graphql["me"]["id"] == first["id"]
    async with owner_engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT identity_issuer, identity_subject, password_hash FROM users "
                    "WHERE identity_subject = :sub"
                ),
                {"sub": sub},
            )
        ).one()
    assert (row.identity_issuer, row.identity_subject, row.password_hash) == (
        issuer.issuer,
        sub,
        None,
    )


async def test_concurrent_first_requests_provision_one_user(
    api: Api, issuer: FakeIssuer, owner_engine: AsyncEngine
) -> None:
    sub = str(uuid.uuid4())
    tokens = [issuer.mint(sub=sub) for _ in range(8)]
    seen = await asyncio.gather(*(me(api, token) for token in tokens))
    assert len({user["id"] for user in seen}) == 1
    async with owner_engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM users WHERE identity_subject = :sub"), {"sub": sub}
        )
    assert count == 1


async def test_an_email_claim_never_identifies_a_user(api: Api, issuer: FakeIssuer) -> None:
    email = unique_email("shared")
    local = await api.register(email=email)
    one = await me(api, issuer.mint(email=email))
    other = await me(api, issuer.mint(email=email))
    # Three identities, three users: linking is off by default.
    assert len({local.id, one["id"], other["id"]}) == 3
    assert one["email"] == other["email"] == email


async def test_the_issuers_current_email_is_shown(api: Api, issuer: FakeIssuer) -> None:
    sub = str(uuid.uuid4())
    before = await me(api, issuer.mint(sub=sub, email=unique_email("old")))
    new_email = unique_email("new")
    after = await me(api, issuer.mint(sub=sub, email=new_email))
    assert after["id"] == before["id"]
    assert after["email"] == new_email
    no_email = await me(api, issuer.mint(sub=sub, email="", phone="+15550100"))
    assert no_email == after  # a token without an email keeps the one known


async def test_external_accounts_have_no_password(api: Api, issuer: FakeIssuer) -> None:
    email = unique_email("nopass")
    await me(api, issuer.mint(email=email))
    for password in ("", "correct horse battery", "x" * 72):
        login = await api.http.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert login.status_code == 401, login.text
        assert login.json()["error"]["message"] == "Invalid email or password"
    # The address is free for a password account, which is a different user.
    local = await api.register(email=email)
    assert local.id != (await me(api, issuer.mint(email=email)))["id"]


async def test_the_legacy_shared_secret_signs_for_the_same_users(
    api: Api, issuer: FakeIssuer
) -> None:
    sub = str(uuid.uuid4())
    asymmetric = await me(api, issuer.mint(sub=sub))
    legacy = issuer.mint_hs256(LEGACY_SECRET, header={"alg": "HS256", "typ": "JWT"}, sub=sub)
    assert (await me(api, legacy))["id"] == asymmetric["id"]


async def test_external_users_own_their_data_like_everyone(api: Api, issuer: FakeIssuer) -> None:
    alice = external_user(api, issuer)
    bob = external_user(api, issuer)
    conversation = await api.create_conversation(alice, model="echo", title="mine")
    for transport in transports(api.http, api.ws_url).values():
        result = await transport.stream(alice, str(conversation["id"]), "hello there")
        assert result.error is None, (transport.name, result.error)
        assert result.text.startswith("[echo]"), transport.name
    assert len(await api.messages(alice, str(conversation["id"]))) == 6
    usage = (await api.http.get("/api/v1/usage", headers=alice.headers)).json()
    assert usage["requests"] == 3
    assert usage["output_tokens"] > 0

    theirs = await api.http.get(f"/api/v1/conversations/{conversation['id']}", headers=bob.headers)
    assert theirs.status_code == 404
    listed = await api.http.get("/api/v1/conversations", headers=bob.headers)
    assert listed.json()["data"] == []
    stream = await transports(api.http, api.ws_url)["sse"].stream(
        bob, str(conversation["id"]), "let me in"
    )
    assert stream.error is not None
    assert stream.error["status"] == 404


async def test_an_external_login_is_interactive_and_may_manage_api_keys(
    api: Api, issuer: FakeIssuer
) -> None:
    user = external_user(api, issuer)
    created = await api.http.post("/api/v1/api-keys", json={"name": "ci"}, headers=user.headers)
    assert created.status_code == 201, created.text
    by_key = await me(api, created.json()["secret"])
    assert by_key["id"] == (await me(api, user.token))["id"]


# --- refused tokens ----------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _without_kid(issuer: FakeIssuer) -> str:
    return jwt.encode(issuer.claims(), issuer.signing.private, algorithm="RS256")


def _unsigned(issuer: FakeIssuer) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": issuer.signing.kid}
    return f"{b64url(header)}.{b64url(issuer.claims())}."


def _hs256_with_public_key(form: str) -> Callable[[FakeIssuer], str]:
    def mint(issuer: FakeIssuer) -> str:
        key = issuer.signing
        secret = key.public_pem if form == "pem" else json.dumps(key.public_jwk()).encode()
        return issuer.mint_hs256(secret, header={"alg": "HS256", "typ": "JWT", "kid": key.kid})

    return mint


def _embedded_key(header: str) -> Callable[[FakeIssuer], str]:
    def mint(issuer: FakeIssuer) -> str:
        attacker = SigningKey.generate("RSA")
        extra: dict[str, Any] = (
            {"jwk": attacker.public_jwk()}
            if header == "jwk"
            else {"jku": f"{issuer.base_url}/attacker/jwks.json"}
        )
        return issuer.mint(key=attacker, headers=extra)

    return mint


def _standby(issuer: FakeIssuer) -> SigningKey:
    return next(key for key in issuer.published if key.kind == "EC")


def _algorithm_swapped(issuer: FakeIssuer) -> str:
    """Signed by the EC key, but the header claims RS256 for its kid."""
    ec_key = _standby(issuer)
    token = ec_key.sign(issuer.claims())
    _, body, signature = token.split(".")
    return f"{b64url({'alg': 'RS256', 'typ': 'JWT', 'kid': ec_key.kid})}.{body}.{signature}"


def _zero_signature(issuer: FakeIssuer) -> str:
    """ECDSA with r = s = 0 ("psychic signatures"): valid for any message in broken verifiers."""
    header = {"alg": "ES256", "typ": "JWT", "kid": _standby(issuer).kid}
    return f"{b64url(header)}.{b64url(issuer.claims())}.{b64url(bytes(64))}"


ATTACKS: dict[str, Callable[[FakeIssuer], str]] = {
    "expired": lambda i: i.mint(iat=_now() - 7200, exp=_now() - 3600),
    "not-yet-valid": lambda i: i.mint(nbf=_now() + 600),
    "issued-in-the-future": lambda i: i.mint(iat=_now() + 600, exp=_now() + 4200),
    "wrong-issuer": lambda i: i.mint(iss="https://attacker.example/auth/v1"),
    "wrong-audience": lambda i: i.mint(aud="anon"),
    "no-audience": lambda i: i.mint(aud=None),
    "no-expiry": lambda i: i.mint(exp=None),
    "no-subject": lambda i: i.signing.sign(
        {name: value for name, value in i.claims().items() if name != "sub"}
    ),
    "unknown-kid": lambda i: i.mint(key=SigningKey.generate("RSA")),
    "missing-kid": _without_kid,
    "alg-none": _unsigned,
    "hs256-signed-with-the-public-key-pem": _hs256_with_public_key("pem"),
    "hs256-signed-with-the-public-jwk": _hs256_with_public_key("jwk"),
    "embedded-jwk-header": _embedded_key("jwk"),
    "jku-header": _embedded_key("jku"),
    "algorithm-swapped-for-the-kid": _algorithm_swapped,
    "ecdsa-zero-signature": _zero_signature,
    "tampered-claims": lambda i: ".".join(
        [i.mint().split(".")[0], b64url(i.claims(sub="someone-else")), i.mint().split(".")[2]]
    ),
    "hs256-with-another-secret": lambda i: i.mint_hs256("x" * 48),
    "hs256-with-our-own-secret": lambda i: i.mint_hs256(TEST_JWT_SECRET),
    "our-issuer-signed-with-their-key": lambda i: i.mint(
        iss="conversation-api", aud="conversation-api", jti="x", sub=str(uuid.uuid4())
    ),
    "supabase-anon-key": lambda i: jwt.encode(
        {"iss": "supabase", "ref": "project", "role": "anon", "iat": _now(), "exp": _now() + 60},
        LEGACY_SECRET,
        algorithm="HS256",
    ),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_every_attack_is_refused_on_every_transport(
    api: Api, issuer: FakeIssuer, attack: str, transport: str
) -> None:
    assert not await accepted_over(transport, api, ATTACKS[attack](issuer))


# --- the issuer's JWKS: rotation, outage, slowness ---------------------------------------------


@asynccontextmanager
async def own_server(
    database: Database, fake_groq: FakeGroq, data_dir: Path, issuer: FakeIssuer, **settings: Any
) -> AsyncIterator[Api]:
    """A server of the test's own: its JWKS cache starts empty."""
    values = {"supabase_url": issuer.base_url, **settings}
    live, server, task = await start_server(base_settings(database, fake_groq, data_dir, **values))
    try:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as http:
            yield Api(http, live.ws_url)
    finally:
        await stop_server(server, task)


async def test_keys_rotated_mid_test_keep_working(
    database: Database, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    async with (
        FakeIssuer(kind="RSA") as issuer,
        own_server(database, fake_groq, tmp_path, issuer) as api,
    ):
        sub = str(uuid.uuid4())
        rsa_token = issuer.mint(sub=sub)
        user_id = (await me(api, rsa_token))["id"]
        assert issuer.jwks_requests == 1

        # A standby Ed25519 key is published; then the issuer signs with a brand-new EC key,
        # which the cache has not seen: the unknown kid refreshes it (and finds both).
        standby = issuer.publish("Ed25519")
        issuer.rotate("EC")
        assert (await me(api, issuer.mint(sub=sub)))["id"] == user_id
        assert issuer.jwks_requests == 2
        issuer.signing = standby
        assert (await me(api, issuer.mint(sub=sub)))["id"] == user_id
        assert (await me(api, rsa_token))["id"] == user_id  # the old key is still published
        assert issuer.jwks_requests == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_jwks_down_refuses_external_tokens_and_ours_still_work(
    database: Database, fake_groq: FakeGroq, tmp_path: Path, transport: str
) -> None:
    async with FakeIssuer() as issuer, own_server(database, fake_groq, tmp_path, issuer) as api:
        issuer.mode = "error"
        ours = await api.register()
        assert not await accepted_over(transport, api, issuer.mint())
        assert issuer.jwks_requests == 1
        assert await accepted_over(transport, api, ours.token)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_jwks_slow_is_a_bounded_wait_and_ours_are_served_meanwhile(
    database: Database, fake_groq: FakeGroq, tmp_path: Path, transport: str
) -> None:
    async with (
        FakeIssuer() as issuer,
        own_server(database, fake_groq, tmp_path, issuer, auth_jwks_timeout_seconds=0.5) as api,
    ):
        ours = await api.register()
        issuer.mode = "hang"
        external = asyncio.create_task(accepted_over(transport, api, issuer.mint()))
        await asyncio.wait_for(issuer.held.wait(), timeout=10)
        # While the JWKS request hangs, our own tokens are served: nothing blocks the loop.
        assert await accepted_over(transport, api, ours.token)
        assert issuer.holding == 1
        assert not await asyncio.wait_for(external, timeout=10)  # refused once the wait ends
        assert issuer.holding == 1  # the issuer never answered: the wait was ours to bound
