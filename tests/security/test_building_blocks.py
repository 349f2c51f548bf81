"""The limits' building blocks, without a server: stream-slot leases in the shared Redis, the
fallback when Redis refuses or hangs, whom a request comes from, and the settings' checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import strawberry
from graphql import GraphQLError
from pydantic import ValidationError
from starlette.requests import Request
from strawberry.extensions import SchemaExtension

from app.config import Settings
from app.errors import RateLimited
from app.graphql.errors import ErrorCodes, format_error
from app.http import client_ip
from app.ratelimit.service import build_limits, ip_bucket
from app.ratelimit.slots import StreamSlots
from app.ratelimit.store import SharedStore, connect_redis
from tests.security.conftest import closed_port

TIMEOUT = 0.25


def store(url: str | None, prefix: str = "unit") -> SharedStore:
    redis = connect_redis(url, timeout=TIMEOUT) if url else None
    return SharedStore(redis, prefix=prefix, timeout=TIMEOUT)


# --- stream slots in Redis -----------------------------------------------------------------------


async def test_slots_of_a_dead_process_expire_and_live_ones_are_renewed(
    redis_url: str, redis_prefix: str
) -> None:
    user = uuid.uuid4()
    crashed, survivor = store(redis_url, redis_prefix), store(redis_url, redis_prefix)
    dead = StreamSlots(crashed, lease_seconds=1.0)
    live = StreamSlots(survivor, lease_seconds=1.0)
    try:
        assert await dead.acquire(user, 2) is not None
        assert await dead.acquire(user, 2) is not None
        await dead.aclose()  # the process stops renewing without giving its slots back
        assert await live.acquire(user, 2) is None
        await asyncio.sleep(1.3)
        kept = await live.acquire(user, 2)  # the dead process's leases ran out
        assert kept is not None
        # A live slot outlasts its lease: it is renewed while the stream runs.
        await asyncio.sleep(2.0)
        assert await live.acquire(user, 2) is not None
        assert await live.acquire(user, 2) is None
        await kept.release()
        await kept.release()  # twice is harmless
        assert await live.acquire(user, 2) is not None
    finally:
        await live.aclose()
        await crashed.aclose()
        await survivor.aclose()


# --- Redis unavailable ---------------------------------------------------------------------------


@pytest.fixture(params=["refused", "hung"])
async def unavailable_redis(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A closed port, or one that accepts connections and never answers (a hung Redis)."""
    if request.param == "refused":
        yield f"redis://127.0.0.1:{closed_port()}/0"
        return
    held: list[asyncio.StreamWriter] = []

    async def swallow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_an_unavailable_redis_costs_one_timeout_and_the_limits_still_hold(
    unavailable_redis: str,
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=unavailable_redis,
        redis_timeout_seconds=TIMEOUT,
        login_rate_limit_per_email="3/hour",
    )
    async with build_limits(settings) as limits:  # pings Redis once at start-up
        assert limits.shared is False
        durations = []
        for _ in range(3):
            started = time.perf_counter()
            await limits.check_login("203.0.113.7", "someone@example.test")
            durations.append(time.perf_counter() - started)
        # Redis is left alone for a while after a failure: no call waits for it again.
        assert max(durations) < 0.05, durations
        with pytest.raises(RateLimited) as refused:
            await limits.check_login("203.0.113.7", "someone@example.test")
        assert refused.value.retry_after >= 1
        await limits.check_login("203.0.113.7", "someone-else@example.test")


async def test_a_failing_redis_is_given_up_on_within_the_timeout(
    unavailable_redis: str,
) -> None:
    shared = store(unavailable_redis)
    assert shared.redis is not None
    try:
        started = time.perf_counter()
        assert await shared.run(shared.redis.ping, _local) == "local"
        assert time.perf_counter() - started < TIMEOUT + 0.2
        assert shared.shared is False
    finally:
        await shared.aclose()


async def _local() -> str:
    return "local"


# --- who is calling ------------------------------------------------------------------------------


def request_from(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    scope: dict[str, Any] = {"type": "http", "headers": headers, "client": (peer, 5555)}
    return Request(scope)


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, ["6.6.6.6"], "10.0.0.9"),  # no trusted proxy: the header is the client's own words
        (1, ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),  # the proxy appended what it saw
        (1, ["6.6.6.6", "203.0.113.7"], "203.0.113.7"),  # across repeated headers too
        (2, ["6.6.6.6, 203.0.113.7, 10.1.1.1"], "203.0.113.7"),
        (3, ["203.0.113.7"], "203.0.113.7"),  # fewer entries than hops: the leftmost
        (1, ["not-an-ip"], "10.0.0.9"),
        (1, [], "10.0.0.9"),
    ],
)
def test_client_ip(hops: int, forwarded: list[str], expected: str) -> None:
    assert client_ip(request_from("10.0.0.9", forwarded), hops) == expected


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
    ],
)
def test_ip_buckets(address: str | None, bucket: str) -> None:
    assert ip_bucket(address) == bucket


# --- settings and masking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("login_rate_limit_per_ip", "0/minute"),
        ("login_rate_limit_per_ip", "ten a minute"),
        ("reply_rate_limit_per_user", "1/s;1/m;1/h;1/d;1/y"),
        ("cors_origins", "https://app.example/path"),
        ("cors_origins", "*"),
        ("cors_origins", "ftp://files.example"),
        ("max_request_body_bytes", "1024"),
        ("redis_timeout_seconds", "30"),
        ("trusted_proxy_hops", "-1"),
    ],
)
def test_limit_settings_are_checked_at_start_up(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **{name: value})  # type: ignore[call-arg, arg-type]


def test_origins_are_normalised_as_browsers_send_them() -> None:
    settings = Settings(
        _env_file=None, cors_origins="HTTPS://App.Example:443/, http://localhost:3000"
    )  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://app.example", "http://localhost:3000"]


def test_an_unexpected_error_is_masked_by_the_graphql_formatter() -> None:
    secret = RuntimeError("password=hunter2 at db.internal:5432")
    error = GraphQLError("password=hunter2", original_error=secret, path=["me"])
    formatted = format_error(error, "req-123").formatted
    assert formatted["message"] == "Internal server error"
    assert formatted["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-123"}
    assert "hunter2" not in str(formatted)


async def test_a_failing_extension_is_masked_too() -> None:
    # What a failed commit looks like to Strawberry: an exception out of an extension after the
    # resolvers ran, which it would otherwise answer with the exception's own text.
    class FailingCommit(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:
            yield
            raise RuntimeError("could not commit: relation users at db.internal:5432")

    @strawberry.type
    class Query:
        ok: bool = True

    schema = strawberry.Schema(query=Query, extensions=[FailingCommit, ErrorCodes])
    result = await schema.execute("{ ok }")
    assert result.errors is not None
    (error,) = [e.formatted for e in result.errors]
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
