"""ProxyFilter.reconnect: a fetch caught on the old source is retried on the new one.

The old source hangs (a partitioned connection); closing it fails what is
in flight, which the proxy retries on the new source, so the client's read
succeeds.  A source of another size is refused and the proxy keeps its own.
"""

from __future__ import annotations

import asyncio

import pytest

from ovis.block import MemoryDevice
from ovis.block._device import BlockError, Buffer, Filter
from ovis.migrate import Bitmap, MigrationError, ProxyFilter
from ovis.nbd._constants import Errno

from .helpers import MiB, memory_with, pattern


class Hanging(Filter):
    """Reads never answer until the device is closed; then they fail with EIO."""

    def __init__(self, next: MemoryDevice) -> None:
        super().__init__(next)
        self.closed = asyncio.Event()
        self.reads = 0

    async def read(self, offset: int, length: int) -> Buffer:
        self.reads += 1
        await self.closed.wait()
        raise BlockError(Errno.EIO, "remote connection: closed")

    async def aclose(self) -> None:
        self.closed.set()


def test_reconnect_retries_fetches_in_flight() -> None:
    async def main() -> None:
        data = pattern(2 * MiB, 9)
        old = Hanging(await memory_with(2 * MiB, [(0, data)]))
        proxy = ProxyFilter(old, MemoryDevice(2 * MiB), Bitmap(32))
        read = asyncio.create_task(proxy.read(MiB, 4096))
        await asyncio.sleep(0.01)
        assert old.reads == 1 and not read.done()
        with pytest.raises(ValueError, match="has 1048576 bytes"):
            await proxy.reconnect(MemoryDevice(MiB))
        await proxy.reconnect(await memory_with(2 * MiB, [(0, data)]))
        assert await asyncio.wait_for(read, 2) == data[MiB : MiB + 4096]
        assert old.closed.is_set()
        assert proxy.progress.source_error is None
        await proxy.aclose()
        with pytest.raises(MigrationError):
            await proxy.reconnect(MemoryDevice(2 * MiB))

    asyncio.run(main())
