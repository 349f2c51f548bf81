"""Request rates: named rules of one or more windows, counted with `limits`' sliding windows.

The sliding window counter keeps two counters per window (this one and the last, weighted by how
much of it still overlaps) instead of one entry per request as an exact moving window does: its
memory is constant per client, and `limits`' in-memory moving window rescans every key to expire
entries, which a flood of distinct addresses would turn against us. The price is approximation:
requests bunched at the end of one window are partly forgotten early in the next, so a burst
across a boundary can briefly pass more than the rate. Rules pair a short window with a long one
("10/minute;50/hour") so that the long one bounds what the approximation lets through.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.errors import RateLimited
from app.ratelimit.store import SharedStore


@dataclass(frozen=True, slots=True)
class Rule:
    """One limited action: its bucket name, its windows ("10/minute;100/hour"), its message."""

    name: str
    windows: tuple[RateLimitItem, ...]
    message: str

    @classmethod
    def of(cls, name: str, spec: str, message: str) -> Rule:
        return cls(name, tuple(parse_many(spec)), message)


def _digest(identifier: str) -> str:
    # Keys name no email or address in Redis, and have a fixed length whatever the client sent.
    return hashlib.blake2b(identifier.encode("utf-8"), digest_size=16).hexdigest()


async def _hit(strategy: SlidingWindowCounterRateLimiter, rule: Rule, key: str) -> float | None:
    """Count one request in every window; seconds to wait when one of them is full."""
    for window in rule.windows:
        if not await strategy.hit(window, rule.name, key):
            stats = await strategy.get_window_stats(window, rule.name, key)
            return stats.reset_time - time.time()
    return None


class RateLimiter:
    def __init__(self, store: SharedStore, remote: Storage | None) -> None:
        self._store = store
        self._memory = MemoryStorage()
        self._local = SlidingWindowCounterRateLimiter(self._memory)
        self._remote = SlidingWindowCounterRateLimiter(remote) if remote is not None else None

    async def hit(self, rule: Rule, identifier: str) -> None:
        """Count one `rule` action by `identifier`; RateLimited when a window is already full."""
        key = _digest(identifier)
        remote = self._remote
        retry_after = await self._store.run(
            (lambda: _hit(remote, rule, key)) if remote is not None else None,
            lambda: _hit(self._local, rule, key),
        )
        if retry_after is not None:
            raise RateLimited(retry_after, rule.message)

    def close(self) -> None:
        # MemoryStorage expires keys from a task it starts itself; do not leave it pending.
        timer = self._memory.timer
        if timer is not None and not timer.done():
            timer.cancel()
