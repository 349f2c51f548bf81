"""The limits, named by the action they protect. Services call these; transports never do."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from limits.aio.storage import RedisStorage

from app.config import Settings
from app.errors import RateLimited
from app.ratelimit.limiter import RateLimiter, Rule
from app.ratelimit.slots import StreamSlot, StreamSlots
from app.ratelimit.store import SharedStore, connect_redis

# A refused stream waits for another of the user's replies to end: no window to report, so the
# client is told to come back shortly.
STREAM_SLOT_RETRY_AFTER_SECONDS = 2
_LOGIN = "Too many log-in attempts; retry later"
_REGISTER = "Too many sign-ups; retry later"


def ip_bucket(client_ip: str | None) -> str:
    """The bucket of a client address: IPv6 clients are counted per /64, the usual allocation
    to one subscriber, so rotating through one's own addresses does not multiply the limit."""
    if not client_ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Limits:
    def __init__(
        self,
        settings: Settings,
        store: SharedStore,
        limiter: RateLimiter,
        slots: StreamSlots,
    ) -> None:
        self._enabled = settings.rate_limit_enabled
        self._store = store
        self._limiter = limiter
        self._slots = slots
        self._max_streams = settings.user_max_concurrent_streams
        self._login_ip = Rule.of("login-ip", settings.login_rate_limit_per_ip, _LOGIN)
        self._login_email = Rule.of("login-email", settings.login_rate_limit_per_email, _LOGIN)
        self._register_ip = Rule.of("register-ip", settings.register_rate_limit_per_ip, _REGISTER)
        self._register_email = Rule.of(
            "register-email", settings.register_rate_limit_per_email, _REGISTER
        )
        self._reply = Rule.of(
            "reply-user",
            settings.reply_rate_limit_per_user,
            "Too many replies started; retry later",
        )
        self._write = Rule.of(
            "write-user", settings.write_rate_limit_per_user, "Too many changes; retry later"
        )

    @property
    def shared(self) -> bool:
        """Whether counts are shared across processes right now (Redis configured and up)."""
        return self._store.shared

    async def check_login(self, client_ip: str | None, email: str | None) -> None:
        """Count one log-in attempt (whatever its outcome); RateLimited past either limit."""
        if self._enabled:
            await self._limiter.hit(self._login_ip, ip_bucket(client_ip))
            if email is not None:
                await self._limiter.hit(self._login_email, email)

    async def check_registration(self, client_ip: str | None, email: str) -> None:
        if self._enabled:
            await self._limiter.hit(self._register_ip, ip_bucket(client_ip))
            await self._limiter.hit(self._register_email, email)

    async def check_reply_start(self, user_id: uuid.UUID) -> None:
        if self._enabled:
            await self._limiter.hit(self._reply, str(user_id))

    async def check_write(self, user_id: uuid.UUID) -> None:
        """Count one write (a conversation created, changed or deleted, an API key created)."""
        if self._enabled:
            await self._limiter.hit(self._write, str(user_id))

    async def take_stream_slot(self, user_id: uuid.UUID) -> StreamSlot:
        """One of the user's USER_MAX_CONCURRENT_STREAMS, or RateLimited when all are in use."""
        if not self._enabled:
            return StreamSlot()
        slot = await self._slots.acquire(user_id, self._max_streams)
        if slot is None:
            raise RateLimited(
                STREAM_SLOT_RETRY_AFTER_SECONDS,
                f"At most {self._max_streams} replies can stream at once; wait for one to finish",
            )
        return slot


def _limits_storage_uri(redis_url: str) -> str:
    # `limits` names its async Redis schemes `async+redis://` and `async+redis+unix://`.
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


@asynccontextmanager
async def build_limits(settings: Settings) -> AsyncIterator[Limits]:
    """The limits of one running service; with REDIS_URL, counted in Redis (lazily connected)."""
    redis = None
    if settings.redis_url and settings.rate_limit_enabled:
        redis = connect_redis(settings.redis_url, timeout=settings.redis_timeout_seconds)
    store = SharedStore(
        redis, prefix=settings.redis_key_prefix, timeout=settings.redis_timeout_seconds
    )
    remote = None
    if redis is not None and settings.redis_url:
        # Handed through to redis-py (`limits` types its options as scalars): the counters and
        # the stream slots share one connection pool, and its timeouts.
        options: dict[str, Any] = {"connection_pool": redis.connection_pool}
        remote = RedisStorage(
            _limits_storage_uri(settings.redis_url),
            implementation="redispy",
            key_prefix=store.key("rate"),
            **options,
        )
    limiter = RateLimiter(store, remote)
    slots = StreamSlots(store)
    try:
        await store.check()
        yield Limits(settings, store, limiter, slots)
    finally:
        await slots.aclose()
        limiter.close()
        await store.aclose()
