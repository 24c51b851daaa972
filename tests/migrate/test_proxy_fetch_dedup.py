"""Concurrent requests for one uncached block fetch it once, and never clobber a write."""

from __future__ import annotations

import asyncio

from ovis.block import DelayFilter, MemoryDevice
from ovis.migrate import Bitmap, ProxyFilter

from .helpers import Counting, MiB, memory_with, pattern

BLOCK = 64 * 1024


def test_concurrent_reads_of_one_block_fetch_it_once() -> None:
    async def main() -> None:
        data = pattern(MiB, 1)
        source = Counting(DelayFilter(await memory_with(MiB, [(0, data)]), delay_s=0.02))
        proxy = ProxyFilter(source, MemoryDevice(MiB), Bitmap(16))
        reads = [proxy.read(BLOCK + i * 4096, 4096) for i in range(16)]
        reads += [proxy.read(BLOCK, 3 * BLOCK)]  # overlaps, and needs two more blocks
        results = await asyncio.gather(*reads)
        for i in range(16):
            assert results[i] == data[BLOCK + i * 4096 : BLOCK + (i + 1) * 4096]
        assert results[16] == data[BLOCK : 4 * BLOCK]
        fetched = sorted(source.read_ranges)
        assert fetched == [(BLOCK, BLOCK), (2 * BLOCK, 2 * BLOCK)], fetched
        await proxy.aclose()

    asyncio.run(main())


def test_a_fetch_in_flight_does_not_overwrite_a_later_write() -> None:
    async def main() -> None:
        source = DelayFilter(await memory_with(MiB, [(0, pattern(MiB, 1))]), delay_s=0.05)
        proxy = ProxyFilter(source, MemoryDevice(MiB), Bitmap(16))
        fetch = asyncio.create_task(proxy.cache(0, BLOCK))
        await asyncio.sleep(0.01)  # the fetch is waiting for the source
        mine = pattern(BLOCK, 2)
        await proxy.write(0, mine)  # a whole block: waits for the fetch, then lands
        await fetch
        assert await proxy.read(0, BLOCK) == mine
        await proxy.aclose()

    asyncio.run(main())


def test_a_failed_fetch_is_retried_by_the_next_request() -> None:
    async def main() -> None:
        data = pattern(MiB, 1)
        memory = await memory_with(MiB, [(0, data)])
        failing = FailOnce(memory)
        proxy = ProxyFilter(failing, MemoryDevice(MiB), Bitmap(16))
        first, second = await asyncio.gather(
            proxy.read(0, 4096), proxy.read(0, 4096), return_exceptions=True
        )
        assert isinstance(first, Exception)
        assert second == data[:4096], "the waiter retried the fetch itself"
        assert proxy.progress.cached_blocks == 1
        await proxy.aclose()

    asyncio.run(main())


class FailOnce(Counting):
    async def read(self, offset: int, length: int) -> bytes:
        self.read_bytes += 1
        await asyncio.sleep(0.01)
        if self.read_bytes == 1:
            raise OSError(5, "injected")
        return bytes(await self.next.read(offset, length))
