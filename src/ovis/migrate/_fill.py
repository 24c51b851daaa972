"""fill_all: the proxy's background fill loop, xnbd-bgctl --cache-all.

Walks the bitmap once from the start and fills every uncached run in pieces
of at most `chunk_blocks`, with at most `max_in_flight` pieces in flight
(each piece waits on the rate limiter inside `CacheMap.fill`).  It calls
`flush` (the proxy's: cache fdatasync, then the bitmap) every
`sync_interval` seconds and once at the end, so a restart loses at most
that much progress: bits never reach the file before their data does.

Failure: the first piece that fails cancels the others (a TaskGroup) and
its error propagates; blocks already filled stay cached and marked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ._cachemap import CacheMap
from ._rate import RateLimiter


async def fill_all(
    cmap: CacheMap,
    limiter: RateLimiter,
    *,
    max_in_flight: int,
    chunk_blocks: int,
    sync_interval: float,
    flush: Callable[[], Awaitable[None]],
) -> None:
    """Fill every block of `cmap` not yet cached; see the module docstring."""
    bitmap = cmap.bitmap
    synced = time.monotonic()
    slots = asyncio.Semaphore(max_in_flight)

    async def fill_chunk(first: int, count: int) -> None:
        try:
            await cmap.fill(first, first + count, limiter)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        pos = 0
        while (first := bitmap.find(False, pos)) < bitmap.nbits:
            end = min(first + chunk_blocks, bitmap.nbits)
            end = bitmap.find(True, first, end)
            await slots.acquire()
            group.create_task(fill_chunk(first, end - first))
            pos = end
            if time.monotonic() - synced >= sync_interval:
                await flush()
                synced = time.monotonic()
    await flush()
