"""Where counts live: Redis when it is configured and answering, else this process's memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from limits.errors import StorageError
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = structlog.get_logger(__name__)

T = TypeVar("T")

# After a failure, calls stay local this long before Redis is tried again: during an outage no
# request pays the timeout, and one warning is logged, not one per request.
RETRY_REDIS_AFTER_SECONDS = 5.0
_FAILURES = (RedisError, StorageError, OSError, TimeoutError)


def connect_redis(url: str, *, timeout: float) -> Redis:
    """A client that connects lazily, gives up after `timeout` and never retries on its own."""
    pool: ConnectionPool = ConnectionPool.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # Retries would only stretch an outage past the timeout; the store falls back instead.
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


class SharedStore:
    """Runs each operation on Redis, or on the in-process fallback while Redis is unavailable."""

    def __init__(self, redis: Redis | None, *, prefix: str, timeout: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self._timeout = timeout
        self._down_until = 0.0
        self._outage = False

    @property
    def shared(self) -> bool:
        """Whether counts are currently shared across processes (Redis configured and up)."""
        return self.redis is not None and not self._outage

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(
        self,
        remote: Callable[[], Awaitable[T]] | None,
        local: Callable[[], Awaitable[T]],
    ) -> T:
        """`remote()` against Redis if it is up, else (or if it fails) `local()`."""
        if remote is not None and self.redis is not None and self._may_try():
            try:
                async with asyncio.timeout(self._timeout):
                    result = await remote()
            except _FAILURES as error:
                self._failed(error)
            else:
                self._succeeded()
                return result
        return await local()

    async def attempt(self, remote: Callable[[], Awaitable[Any]]) -> bool:
        """Best effort on Redis (renewing or giving back a slot): False when it did not happen."""
        if self.redis is None or not self._may_try():
            return False
        try:
            async with asyncio.timeout(self._timeout):
                await remote()
        except _FAILURES as error:
            self._failed(error)
            return False
        self._succeeded()
        return True

    async def check(self) -> None:
        """Ping Redis once at start-up, so an unreachable one is reported before traffic."""
        if self.redis is not None:
            await self.attempt(self.redis.ping)

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            await self.redis.connection_pool.aclose()

    def _may_try(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
        if not self._outage:
            self._outage = True
            logger.warning(
                "rate_limit_store_unavailable",
                error=type(error).__name__,
                detail=str(error)[:200],
                fallback="per-process limits until Redis answers again",
            )

    def _succeeded(self) -> None:
        if self._outage:
            self._outage = False
            logger.warning("rate_limit_store_recovered")
