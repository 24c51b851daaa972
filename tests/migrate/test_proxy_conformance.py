"""ProxyFilter passes check_block_device, over memory and real remote sources."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.block import BlockDevice, FileDevice, MemoryDevice
from ovis.block.testing import check_block_device
from ovis.migrate import Bitmap, PersistentBitmap, ProxyFilter, open_proxy
from tests.conftest import Served

from .helpers import MiB, memory_with, pattern

BLOCK = 64 * 1024


async def _memory_source(size: int) -> MemoryDevice:
    return await memory_with(size, [(0, pattern(300_000, 1)), (size - 70_000, pattern(70_000, 2))])


@pytest.mark.parametrize(
    ("size", "block_size", "cache_kind", "fill"),
    [
        (2 * MiB, BLOCK, "memory", False),
        (2 * MiB + 1000, BLOCK, "memory", False),  # a short last block
        (2 * MiB, 4096, "file", False),
        (2 * MiB, BLOCK, "file", True),  # while the background fill runs
    ],
)
def test_proxy_over_memory_source(
    tmp_path: Path, size: int, block_size: int, cache_kind: str, fill: bool
) -> None:
    serial = itertools.count()

    async def factory() -> BlockDevice:
        n = next(serial)
        source = await _memory_source(size)
        if cache_kind == "memory":
            cache: BlockDevice = MemoryDevice(size)
            bitmap: Bitmap = Bitmap(-(-size // block_size))
        else:
            path = tmp_path / f"cache{n}"
            path.write_bytes(b"")
            cache = FileDevice(path, size=size)
            bitmap = PersistentBitmap.open(
                tmp_path / f"bm{n}", block_size=block_size, disk_size=size
            )
        proxy = ProxyFilter(source, cache, bitmap, block_size=block_size, fill_chunk=block_size)
        if fill:
            proxy.start_fill()
        return proxy

    asyncio.run(check_block_device(factory))


def test_proxy_over_ovis_serve(tmp_path: Path, serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--name", "disk", "--port", "0")
    serial = itertools.count()

    async def factory() -> BlockDevice:
        n = next(serial)
        return await open_proxy(served.uri("disk"), tmp_path / f"c{n}", tmp_path / f"b{n}")

    asyncio.run(check_block_device(factory))


def test_source_must_fit_the_cache_and_bitmap() -> None:
    async def main() -> None:
        source = MemoryDevice(MiB)
        with pytest.raises(ValueError, match="as large as the source"):
            ProxyFilter(source, MemoryDevice(MiB // 2), Bitmap(16))
        with pytest.raises(ValueError, match="one per block"):
            ProxyFilter(source, MemoryDevice(MiB), Bitmap(15))
        with pytest.raises(ValueError, match="power of two"):
            ProxyFilter(source, MemoryDevice(MiB), Bitmap(16), block_size=3 * 4096)

    asyncio.run(main())
