"""RateLimiter: keeps a background copy to at most `rate` bytes per second.

Why a pacer rather than a token bucket with a burst: the copies it paces
(proxy fill, mirror passes) run for minutes, and what matters is that the
link is left with room for client requests at every moment.  Each caller
reserves its bytes on a virtual clock and sleeps until its slot; the first
request goes at once, later ones are spaced by size / rate.  Concurrent
callers get consecutive slots, so the rate holds however many copies are in
flight.  `rate` may be changed while copies run (None: no limit): callers
waiting for a slot then take a new one at the new rate at once, so lifting
a limit takes effect immediately.  `reset()` forgets reservations made by
copies that were stopped.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Paces `acquire(n)` calls to `rate` bytes per second on average."""

    def __init__(self, rate: float | None = None) -> None:
        self._changed = asyncio.Event()
        self.rate = rate
        self._next = 0.0  # monotonic time at which the next slot starts

    @property
    def rate(self) -> float | None:
        return self._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError(f"rate must be positive or None, not {value}")
        self._rate = value
        self.reset()
        self._changed.set()  # wake the waiters: their slots were at the old rate
        self._changed = asyncio.Event()

    def reset(self) -> None:
        """Forget every reservation: the next caller goes at once."""
        self._next = 0.0

    async def acquire(self, nbytes: int) -> None:
        """Wait until `nbytes` more may be sent; returns at once without a limit."""
        while True:
            rate = self._rate
            if rate is None or nbytes <= 0:
                return
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / rate
            if start <= now:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), start - now)
            except TimeoutError:
                return
