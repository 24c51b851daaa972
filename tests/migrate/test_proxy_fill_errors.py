"""A source error stops the fill and is reported; start_fill() then carries on."""

from __future__ import annotations

import asyncio

from ovis.block import ErrorFilter, MemoryDevice
from ovis.migrate import Bitmap, ProxyFilter

from .helpers import MiB, memory_with, pattern, read_all


def test_fill_stops_on_error_and_restarts() -> None:
    async def main() -> None:
        data = pattern(2 * MiB, 1)
        source = ErrorFilter(await memory_with(2 * MiB, [(0, data)]), ops={"read"}, rate=1.0)
        proxy = ProxyFilter(source, MemoryDevice(2 * MiB), Bitmap(32))
        proxy.start_fill()
        for _ in range(100):
            if proxy.progress.fill_error is not None:
                break
            await asyncio.sleep(0.01)
        progress = proxy.progress
        assert progress.fill_error is not None and "injected" in progress.fill_error
        assert not progress.filling and not progress.complete
        source.rate = 0.0  # the source recovers
        proxy.start_fill()
        await asyncio.wait_for(proxy.complete.wait(), 5)
        assert proxy.progress.fill_error is None
        assert await read_all(proxy) == data
        await proxy.aclose()

    asyncio.run(main())
