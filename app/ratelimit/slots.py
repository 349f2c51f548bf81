"""Replies streaming at once, per user: slots that are taken before a reply starts and always
given back when it ends.

In Redis a user's slots are a sorted set whose scores are lease deadlines in Redis' own clock
(so the processes' clocks do not matter). A live stream renews its lease every third of
LEASE_SECONDS; expired members are pruned before counting, so a process that dies without giving
its slots back holds them for one lease at most. In memory they are a set per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

from app.ratelimit.store import SharedStore

LEASE_SECONDS = 30.0

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""
# KEYS[1]: the user's slots; ARGV: member, limit, lease in ms. 1 when taken, 0 when full.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
)
# Also re-adds a member whose lease lapsed (a stalled process): the stream is really running.
_RENEW = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
)


class StreamSlot:
    """One taken slot. `release()` gives it back; calling it again does nothing."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], Awaitable[None]] | None = None) -> None:
        self._release = release

    async def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()


class StreamSlots:
    def __init__(self, store: SharedStore, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self._store = store
        self._lease_ms = int(lease_seconds * 1000)
        self._held: dict[str, set[str]] = {}  # the in-memory slots: key -> members
        self._renewals: set[asyncio.Task[None]] = set()
        redis = store.redis
        self._acquire_script = redis.register_script(_ACQUIRE) if redis is not None else None
        self._renew_script = redis.register_script(_RENEW) if redis is not None else None

    async def acquire(self, user_id: uuid.UUID, limit: int) -> StreamSlot | None:
        """A slot of `user_id`'s `limit`, or None when they are all taken."""
        key = self._store.key("streams", str(user_id))
        member = uuid.uuid4().hex
        return await self._store.run(
            (lambda: self._acquire_remote(key, member, limit))
            if self._acquire_script is not None
            else None,
            lambda: self._acquire_local(key, member, limit),
        )

    async def aclose(self) -> None:
        """Stop renewing leases (the replies give their slots back before this is called)."""
        for task in list(self._renewals):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _acquire_remote(self, key: str, member: str, limit: int) -> StreamSlot | None:
        redis = self._store.redis
        assert self._acquire_script is not None
        assert redis is not None
        if not await self._acquire_script(keys=[key], args=[member, limit, self._lease_ms]):
            return None
        renewal = asyncio.create_task(self._renew(key, member), name="stream-slot-lease")
        self._renewals.add(renewal)
        renewal.add_done_callback(self._renewals.discard)

        async def release() -> None:
            renewal.cancel()
            # If Redis is down now, the lease runs out on its own.
            await self._store.attempt(lambda: redis.zrem(key, member))

        return StreamSlot(release)

    async def _renew(self, key: str, member: str) -> None:
        assert self._renew_script is not None
        script = self._renew_script
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            await self._store.attempt(lambda: script(keys=[key], args=[member, self._lease_ms]))

    async def _acquire_local(self, key: str, member: str, limit: int) -> StreamSlot | None:
        held = self._held.setdefault(key, set())
        if len(held) >= limit:
            return None
        held.add(member)

        async def release() -> None:
            members = self._held.get(key)
            if members is not None:
                members.discard(member)
                if not members:
                    del self._held[key]

        return StreamSlot(release)
