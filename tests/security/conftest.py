"""The abuse suite's shared pieces: a health probe after every hostile test, Redis for the
tests that share limits across processes, and helpers to play several clients from loopback.

Every module runs its own server (see tests/conftest.py) with the limits it exercises set in its
`server_settings`; modules that set `trusted_proxy_hops` play distinct clients by sending
`X-Forwarded-For`, as a trusted reverse proxy would.

The limits under test are per hour, not per minute: a sliding window counter weighs the previous
window's count, rounded down, so a test that straddled a window boundary could be let one request
past a small limit. Hour boundaries make that a one-in-thousands event instead of one in thirty.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis_asyncio

from tests.conftest import LiveServer
from tests.support.api import User

LOCAL_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def from_ip(address: str) -> dict[str, str]:
    """Headers of a request that a trusted proxy forwarded for `address`."""
    return {"X-Forwarded-For": address}


def unique_ip() -> str:
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{(value >> 16) % 250 + 1}"


@pytest.fixture(scope="session")
async def redis_url() -> str:
    """The machine's Redis (shared with other work: only keys under our prefix are touched)."""
    client = redis_asyncio.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis_asyncio.RedisError):
        message = f"Redis is not reachable at {LOCAL_REDIS}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: an unreachable Redis fails the run)")
        pytest.skip(message)
    finally:
        await client.aclose()
    return LOCAL_REDIS


@pytest.fixture(scope="module")
async def redis_prefix(redis_url: str, run_id: str) -> AsyncIterator[str]:
    """A key prefix of this module alone; its keys are deleted afterwards (never a FLUSH)."""
    prefix = f"cvtest-{run_id}-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def probe_user(server: LiveServer) -> AsyncIterator[User]:
    """A bystander registered before the module's hostile tests, from its own address."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        headers = from_ip("192.0.2.1") if server.settings.trusted_proxy_hops else {}
        response = await http.post(
            "/api/v1/auth/register",
            json={"email": f"probe-{uuid.uuid4().hex[:10]}@example.test", "password": "probe-pass"},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        token = response.json()["access_token"]
        me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        yield User(id=me.json()["id"], email=me.json()["email"], password="", token=token)


async def assert_healthy(server: LiveServer, user: User) -> None:
    """The server still answers: liveness, and an ordinary authenticated read on each API."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok"}
        listed = await http.get("/api/v1/conversations", headers=user.headers)
        assert listed.status_code == 200, listed.text
        me = await http.post("/graphql", json={"query": "{ me { id } }"}, headers=user.headers)
        assert me.json() == {"data": {"me": {"id": user.id}}}, me.text


@pytest.fixture
async def server_survives(server: LiveServer, probe_user: User) -> AsyncIterator[None]:
    """After a hostile test, the server must still serve a bystander (every server module
    applies it with `pytestmark = pytest.mark.usefixtures("server_survives")`)."""
    yield
    await assert_healthy(server, probe_user)
