"""REDIS_URL points at a closed port (the shared Redis is never stopped): the limits fall back to
this process's memory, every request is still answered promptly, and the limits still hold.
Also: without trusted proxies, X-Forwarded-For does not make a client someone else."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.fakes.groq_server import FakeGroq, Scenario
from tests.security.conftest import closed_port, from_ip, unique_ip
from tests.support.api import Api, unique_email
from tests.support.streams import transports, wait_until

pytestmark = pytest.mark.usefixtures("server_survives")

EMAIL_LIMIT = 3
IP_LIMIT = 12
PROMPT = 1.0  # seconds: the bound on any answer while Redis is down


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {
        "redis_url": f"redis://127.0.0.1:{closed_port()}/0",
        "login_rate_limit_per_email": f"{EMAIL_LIMIT}/hour",
        "login_rate_limit_per_ip": f"{IP_LIMIT}/hour",
        "user_max_concurrent_streams": 1,
    }


async def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


async def test_requests_are_answered_promptly_and_still_limited(api: Api) -> None:
    email = unique_email()
    for _ in range(EMAIL_LIMIT):
        response, took = await timed(
            api.http.post("/api/v1/auth/login", json={"email": email, "password": "guessing"})
        )
        assert response.status_code == 401, response.text
        assert took < PROMPT
    refused, took = await timed(
        api.http.post("/api/v1/auth/login", json={"email": email, "password": "guessing"})
    )
    assert refused.status_code == 429, refused.text
    assert took < PROMPT
    query = "mutation ($e: String!) { login(input: {email: $e, password: $e}) { accessToken } }"
    graphql, took = await timed(
        api.http.post("/graphql", json={"query": query, "variables": {"e": email}})
    )
    assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert took < PROMPT


async def test_the_stream_cap_holds_per_process(api: Api, fake_groq: FakeGroq) -> None:
    user = await api.register()
    first, second = [str((await api.create_conversation(user))["id"]) for _ in range(2)]
    fake_groq.enqueue(Scenario(n_tokens=400, token_interval=0.05))
    sse = transports(api.http, api.ws_url)["sse"]
    started = asyncio.Event()

    async def seen(event: dict[str, Any]) -> None:
        started.set()

    holding = asyncio.create_task(sse.stream(user, first, "go on", on_event=seen))
    await asyncio.wait_for(started.wait(), 5)
    begun = time.perf_counter()
    refused = await sse.stream(user, second, "a second one")
    assert time.perf_counter() - begun < PROMPT
    assert refused.error is not None
    assert refused.error["status"] == 429
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)

    async def cancelled() -> bool:
        response = await api.http.get(
            f"/api/v1/conversations/{first}/messages", headers=user.headers
        )
        return bool(response.json()["data"][-1]["finish_reason"] == "cancelled")

    await wait_until(cancelled)


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(api: Api) -> None:
    # Each attempt claims another address; the server counts the socket's, so the per-address
    # budget runs out (sooner if earlier tests of this module spent some of it).
    statuses = []
    for _ in range(IP_LIMIT + 1):
        response = await api.http.post(
            "/api/v1/auth/login",
            json={"email": unique_email(), "password": "guessing"},
            headers=from_ip(unique_ip()),
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) <= {401}, statuses
