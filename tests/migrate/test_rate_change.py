"""Changing a limiter's rate wakes callers waiting for a slot; reset() forgets reservations."""

from __future__ import annotations

import asyncio
import time

from ovis.migrate import RateLimiter


def test_lifting_the_limit_wakes_waiters() -> None:
    async def main() -> None:
        limiter = RateLimiter(1000.0)
        await limiter.acquire(1000)  # the first goes at once
        started = time.monotonic()
        waiter = asyncio.create_task(limiter.acquire(10_000))  # would wait 1 s, then 10 s
        await asyncio.sleep(0.05)
        assert not waiter.done()
        limiter.rate = None
        await asyncio.wait_for(waiter, 1)
        assert time.monotonic() - started < 0.5

    asyncio.run(main())


def test_reset_forgets_reservations() -> None:
    async def main() -> None:
        limiter = RateLimiter(1000.0)
        await limiter.acquire(100_000)  # reserves 100 s of slots
        limiter.reset()
        await asyncio.wait_for(limiter.acquire(10), 0.5)

    asyncio.run(main())
