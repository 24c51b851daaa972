"""Reopening a proxy with the same cache and bitmap fetches only the missing blocks."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from ovis.block import FileDevice
from ovis.migrate import PersistentBitmap, ProxyFilter

from .helpers import Counting, MiB, memory_with, pattern, read_all

BLOCK = 64 * 1024
SIZE = 8 * MiB


def test_fill_resumes_after_restart(tmp_path: Path) -> None:
    cache_path, bitmap_path = tmp_path / "cache", tmp_path / "bitmap"
    cache_path.write_bytes(b"")
    data = pattern(SIZE, 1)

    def open_proxy(source: Counting, rate: float | None) -> ProxyFilter:
        bitmap = PersistentBitmap.open(bitmap_path, block_size=BLOCK, disk_size=SIZE)
        cache = FileDevice(cache_path, size=SIZE)
        return ProxyFilter(source, cache, bitmap, max_rate=rate, fill_chunk=BLOCK, max_in_flight=2)

    async def main() -> None:
        # First run: a slow fill, a client write, stopped part way.
        first = Counting(await memory_with(SIZE, [(0, data)]))
        proxy = open_proxy(first, rate=16 * MiB)
        proxy.start_fill()
        mine = pattern(3 * BLOCK, 2)
        await proxy.write(SIZE - 3 * BLOCK, mine)
        await asyncio.sleep(0.2)
        await proxy.aclose()  # flushes: cache, then bitmap
        cached_before = {o // BLOCK for o, _ in first.read_ranges}
        assert 0 < len(cached_before) < SIZE // BLOCK - 3

        # Second run: only what is missing is fetched.
        second = Counting(await memory_with(SIZE, [(0, data)]))
        proxy = open_proxy(second, rate=None)
        assert proxy.progress.cached_blocks == len(cached_before) + 3
        proxy.start_fill()
        await asyncio.wait_for(proxy.complete.wait(), 10)
        fetched_again = {o // BLOCK for o, _ in second.read_ranges}
        assert not fetched_again & cached_before
        assert not fetched_again & {SIZE // BLOCK - i for i in (1, 2, 3)}, "written locally"
        assert len(fetched_again) + len(cached_before) + 3 == SIZE // BLOCK
        expected = data[: SIZE - 3 * BLOCK] + mine
        assert hashlib.sha256(await read_all(proxy)).digest() == hashlib.sha256(expected).digest()
        await proxy.aclose()

    asyncio.run(main())
