"""Writes, zeros and trims land in the cache only; the source is never changed."""

from __future__ import annotations

import asyncio
import hashlib

from ovis.block import CheckedDevice, MemoryDevice
from ovis.migrate import Bitmap, ProxyFilter

from .helpers import Counting, MiB, memory_with, pattern, read_all

BLOCK = 64 * 1024


def test_writes_never_reach_the_source() -> None:
    async def main() -> None:
        source_data = pattern(2 * MiB, 1)
        source = Counting(await memory_with(2 * MiB, [(0, source_data)]))
        proxy = CheckedDevice(ProxyFilter(source, MemoryDevice(2 * MiB), Bitmap(32)))
        expected = bytearray(source_data)

        # A partial-block write: the rest of its block must come from the source.
        data = pattern(1000, 2)
        await proxy.write(BLOCK + 100, data)
        expected[BLOCK + 100 : BLOCK + 1100] = data
        assert source.read_ranges == [(BLOCK, BLOCK)], "read-modify-write of one block"

        # Whole blocks: nothing to fetch.
        source.read_ranges.clear()
        data = pattern(2 * BLOCK, 3)
        await proxy.write(4 * BLOCK, data, fua=True)
        expected[4 * BLOCK : 6 * BLOCK] = data
        assert source.read_ranges == []

        await proxy.zero(8 * BLOCK + 10, BLOCK)  # partial at both ends
        expected[8 * BLOCK + 10 : 9 * BLOCK + 10] = bytes(BLOCK)
        await proxy.trim(12 * BLOCK, 2 * BLOCK + 5)  # two whole blocks, a sliver
        expected[12 * BLOCK : 14 * BLOCK] = bytes(2 * BLOCK)
        await proxy.flush()

        assert await read_all(proxy) == bytes(expected)
        assert "write" not in source.calls and "zero" not in source.calls
        assert "trim" not in source.calls
        assert (
            hashlib.sha256(await read_all(source)).digest() == hashlib.sha256(source_data).digest()
        )
        await proxy.aclose()

    asyncio.run(main())


def test_extents_describe_the_cache_for_cached_blocks_and_the_source_otherwise() -> None:
    async def main() -> None:
        # Source: data in block 0 only.  The client zeroes block 0 and writes block 5.
        source = await memory_with(2 * MiB, [(0, pattern(BLOCK, 1))])
        proxy = CheckedDevice(ProxyFilter(source, MemoryDevice(2 * MiB), Bitmap(32)))
        await proxy.zero(0, BLOCK)
        await proxy.write(5 * BLOCK, pattern(BLOCK, 2))
        data_at = []
        pos = 0
        while pos < proxy.size:
            for extent in await proxy.extents(pos, proxy.size - pos):
                if extent.is_data:
                    data_at.append((pos, extent.length))
                pos += extent.length
        assert data_at == [(5 * BLOCK, BLOCK)]
        await proxy.aclose()

    asyncio.run(main())
