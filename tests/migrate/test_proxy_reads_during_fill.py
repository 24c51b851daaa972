"""While the background fill runs, every read sees the source's data (or the client's)."""

from __future__ import annotations

import asyncio
import random
import time

from ovis.block import CheckedDevice, DelayFilter, MemoryDevice
from ovis.migrate import Bitmap, ProxyFilter

from .helpers import MiB, memory_with, pattern

BLOCK = 64 * 1024
SIZE = 8 * MiB


def test_reads_during_fill_see_source_data() -> None:
    async def main() -> None:
        data = pattern(SIZE, 1)
        source = DelayFilter(await memory_with(SIZE, [(0, data)]), delay_s=0.002)
        proxy = CheckedDevice(
            inner := ProxyFilter(
                source, MemoryDevice(SIZE), Bitmap(SIZE // BLOCK), max_rate=16 * MiB
            )
        )
        inner.start_fill()
        rng = random.Random(7)
        checked_while_filling = 0
        while not inner.complete.is_set():
            offset = rng.randrange(0, SIZE - 1)
            length = rng.randrange(1, min(300_000, SIZE - offset))
            assert await proxy.read(offset, length) == data[offset : offset + length]
            checked_while_filling += 1
            await asyncio.sleep(0.001)
        assert checked_while_filling > 20
        progress = inner.progress
        assert progress.complete and progress.cached_blocks == progress.total_blocks
        assert progress.fetched_bytes == SIZE  # every byte fetched once, by fill or read
        await proxy.aclose()

    asyncio.run(main())


def test_fill_respects_max_rate_and_skips_holes() -> None:
    async def main() -> None:
        # 2 MiB of data in a 32 MiB disk: the holes cost no bandwidth.
        source = await memory_with(32 * MiB, [(0, pattern(MiB, 1)), (20 * MiB, pattern(MiB, 2))])
        proxy = ProxyFilter(source, MemoryDevice(32 * MiB), Bitmap(512), max_rate=4 * MiB)
        started = time.monotonic()
        proxy.start_fill()
        await asyncio.wait_for(proxy.complete.wait(), 10)
        elapsed = time.monotonic() - started
        progress = proxy.progress
        assert progress.fetched_bytes == 2 * MiB
        assert progress.zeroed_bytes == 30 * MiB
        # 2 MiB at 4 MiB/s: the first MiB-chunk goes at once, the second waits 0.25 s.
        assert 0.2 < elapsed < 2.0, elapsed
        await proxy.aclose()

    asyncio.run(main())
