"""Log-in and sign-up under attack: refused per address and per email, across transports, before
bcrypt runs and before anything is written.

How "bcrypt did not run" is shown without peeking inside the server: the server runs in this
process at the production cost (BCRYPT_ROUNDS=12), and a bcrypt check is CPU work that no
scheduler can hide. The test measures the process CPU time of one allowed wrong-password attempt
(one bcrypt check), then of several refused attempts together: had bcrypt run for even one of
them, they would cost at least as much as the allowed one; they cost a small fraction of it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.security.conftest import from_ip, unique_ip
from tests.support.api import Api, unique_email

EMAIL_LIMIT = 3
IP_LIMIT = 5
pytestmark = pytest.mark.usefixtures("server_survives")

LOGIN = """
mutation ($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }
"""


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {
        "bcrypt_rounds": 12,
        "trusted_proxy_hops": 1,  # one (simulated) proxy: each test plays its own client addresses
        "login_rate_limit_per_ip": f"{IP_LIMIT}/hour",
        "login_rate_limit_per_email": f"{EMAIL_LIMIT}/hour",
        "register_rate_limit_per_ip": "2/hour",
        "register_rate_limit_per_email": "2/hour",
    }


async def rest_login(api: Api, email: str, password: str, ip: str) -> httpx.Response:
    return await api.http.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, headers=from_ip(ip)
    )


async def graphql_login(api: Api, email: str, password: str, ip: str) -> dict[str, Any]:
    response = await api.http.post(
        "/graphql",
        json={"query": LOGIN, "variables": {"e": email, "p": password}},
        headers=from_ip(ip),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def register(api: Api, email: str, ip: str) -> httpx.Response:
    return await api.http.post(
        "/api/v1/auth/register",
        json={"email": email, "password": "correct horse battery"},
        headers=from_ip(ip),
    )


@contextmanager
def no_garbage_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def assert_rest_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1


def assert_graphql_rate_limited(body: dict[str, Any]) -> None:
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED", error
    assert error["extensions"]["retryAfter"] >= 1


async def test_login_brute_force_is_refused_before_bcrypt_runs(api: Api) -> None:
    victim_email = unique_email("victim")
    assert (await register(api, victim_email, unique_ip())).status_code == 201
    attacker = unique_ip()

    with no_garbage_collection():  # a full collection is CPU work of its own, unrelated
        allowed_costs = []
        for _ in range(EMAIL_LIMIT):
            started = time.process_time()
            response = await rest_login(api, victim_email, "wrong-guess", attacker)
            allowed_costs.append(time.process_time() - started)
            assert response.status_code == 401, response.text
        one_bcrypt = min(allowed_costs)

        started, wall = time.process_time(), time.perf_counter()
        refused_rest = [
            await rest_login(api, victim_email, "wrong-guess", attacker) for _ in range(3)
        ]
        refused_graphql = [
            await graphql_login(api, victim_email, "guess", attacker) for _ in range(2)
        ]
        refused_cpu, refused_wall = time.process_time() - started, time.perf_counter() - wall

    for response in refused_rest:
        assert_rest_rate_limited(response)
    for body in refused_graphql:
        assert_graphql_rate_limited(body)
    # Had bcrypt run for even one of the five, together they would cost at least one check.
    assert refused_cpu < 0.75 * one_bcrypt, (refused_cpu, one_bcrypt)
    assert refused_wall < 10 * one_bcrypt, (refused_wall, one_bcrypt)  # and answered at once

    # The email's budget is spent whatever the address and the password: that is what stops a
    # distributed guesser (and what lets an attacker lock an account out for a few minutes).
    right_password = await rest_login(api, victim_email, "correct horse battery", unique_ip())
    assert_rest_rate_limited(right_password)


async def test_per_address_limit_spans_emails_and_transports_but_not_other_operations(
    api: Api,
) -> None:
    address = unique_ip()
    for attempt in range(IP_LIMIT):
        if attempt % 2:
            body = await graphql_login(api, unique_email(), "wrong-guess", address)
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        else:
            assert (
                await rest_login(api, unique_email(), "wrong-guess", address)
            ).status_code == 401
    assert_rest_rate_limited(await rest_login(api, unique_email(), "wrong-guess", address))
    assert_graphql_rate_limited(await graphql_login(api, unique_email(), "wrong-guess", address))

    # Same address, same /graphql route, other operations: their buckets are their own.
    signed_up = await register(api, unique_email(), address)
    assert signed_up.status_code == 201, signed_up.text
    token = signed_up.json()["access_token"]
    me = await api.http.post(
        "/graphql",
        json={"query": "{ me { email } }"},
        headers={**from_ip(address), "Authorization": f"Bearer {token}"},
    )
    assert "errors" not in me.json(), me.text


async def test_refused_sign_ups_write_nothing(api: Api) -> None:
    address = unique_ip()
    first, second, third = unique_email(), unique_email(), unique_email()
    assert (await register(api, first, address)).status_code == 201
    assert (await register(api, second, address)).status_code == 201
    assert_rest_rate_limited(await register(api, third, address))
    # The refused sign-up left no account behind: the email is still free.
    assert (await register(api, third, unique_ip())).status_code == 201

    # Per email too: probing whether an address has an account is throttled like guessing.
    email = unique_email()
    assert (await register(api, email, unique_ip())).status_code == 201
    assert (await register(api, email, unique_ip())).status_code == 409
    assert_rest_rate_limited(await register(api, email.upper(), unique_ip()))


async def test_ipv6_clients_are_counted_per_64_block(api: Api) -> None:
    for host in range(1, IP_LIMIT + 1):
        response = await rest_login(api, unique_email(), "wrong-guess", f"2001:db8:a:1::{host:x}")
        assert response.status_code == 401, response.text
    # Another address of the same /64: the same subscriber, the same budget.
    assert_rest_rate_limited(
        await rest_login(api, unique_email(), "wrong-guess", "2001:db8:a:1:ffff::1")
    )
    next_block = await rest_login(api, unique_email(), "wrong-guess", "2001:db8:a:2::1")
    assert next_block.status_code == 401, next_block.text
