"""Is this process keeping up? Event-loop lag, measured cheaply, decides whether streams coalesce.

A task sleeps for a short period and measures how late it wakes up: on an idle loop the delay
is a fraction of a millisecond; on a saturated one it grows with the queue of ready callbacks.
Above `enter_ms` the process counts as *behind*, below `leave_ms` it is keeping up again (the
gap stops it flapping). While behind, each reply reads its upstream at most every
STREAM_COALESCE_MS, so one wake-up carries many chunks: fewer events, less CPU per token,
latency bounded by that cap. While keeping up, nothing waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.streaming.background import BackgroundTask

_PERIOD = 0.02
_SMOOTHING = 0.3


class LoopLag:
    """Measures while `active()` says there is something to measure for (live replies)."""

    def __init__(
        self, active: Callable[[], bool], *, enter_ms: float = 5.0, leave_ms: float = 1.0
    ) -> None:
        self._active = active
        self._enter = enter_ms / 1000
        self._leave = leave_ms / 1000
        self.lag = 0.0  # smoothed seconds
        self.behind = False
        self.task = BackgroundTask(self._measure, "loop-lag")

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while self._active():
            start = loop.time()
            await asyncio.sleep(_PERIOD)
            late = max(0.0, loop.time() - start - _PERIOD)
            self.lag += _SMOOTHING * (late - self.lag)
            if self.behind and self.lag < self._leave:
                self.behind = False
            elif not self.behind and self.lag > self._enter:
                self.behind = True
        self.lag, self.behind = 0.0, False  # idle: the next reply starts the measuring again
