"""Switching to target mode while a reader runs: no errors, and the source is no longer needed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.block import CheckedDevice, FileDevice, MemoryDevice
from ovis.migrate import Bitmap, MigrationError, PersistentBitmap, ProxyFilter, open_proxy
from tests.conftest import Served

from .helpers import Counting, MiB, memory_with, pattern, read_all


async def _reader(device: CheckedDevice, expected: bytes, stop: asyncio.Event) -> int:
    """Read random ranges until told to stop; returns how many reads were checked."""
    rng = random.Random(3)
    count = 0
    while not stop.is_set():
        offset = rng.randrange(0, len(expected) - 1)
        length = rng.randrange(1, min(256 * 1024, len(expected) - offset))
        data = await device.read(offset, length)
        assert data == expected[offset : offset + length], f"read({offset}, {length})"
        count += 1
        await asyncio.sleep(0)
    return count


def test_switch_with_a_concurrent_reader(
    tmp_path: Path, serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--name", "disk", "--port", "0")
    expected = image.read_bytes()

    async def main() -> None:
        inner = await open_proxy(
            served.uri("disk"), tmp_path / "cache", tmp_path / "bitmap", max_rate=64 * MiB
        )
        proxy = CheckedDevice(inner)
        stop = asyncio.Event()
        reader = asyncio.create_task(_reader(proxy, expected, stop))
        with pytest.raises(MigrationError, match="not cached"):
            await inner.switch()
        inner.start_fill()
        await asyncio.wait_for(inner.complete.wait(), 20)
        await inner.switch()
        assert inner.switched and inner.progress.switched
        served.stop()  # the source is gone for good
        await asyncio.sleep(0.2)  # the reader goes on, from the cache alone
        mine = pattern(5000, 9)
        await proxy.write(12345, mine, fua=True)
        stop.set()
        assert await reader > 10
        assert await proxy.read(12345, 5000) == mine
        await proxy.aclose()

    asyncio.run(main())
    # After the switch the cache file is the disk.
    data = (tmp_path / "cache").read_bytes()
    assert data[:12345] == expected[:12345] and data[17345:] == expected[17345:]


def test_auto_switch_closes_the_source() -> None:
    async def main() -> None:
        data = pattern(2 * MiB, 1)
        source = Counting(await memory_with(2 * MiB, [(0, data)]))
        proxy = ProxyFilter(source, MemoryDevice(2 * MiB), Bitmap(32), auto_switch=True)
        stop = asyncio.Event()
        reader = asyncio.create_task(_reader(CheckedDevice(proxy), data, stop))
        proxy.start_fill()
        for _ in range(200):
            if proxy.switched:
                break
            await asyncio.sleep(0.01)
        assert proxy.switched and source.calls.get("aclose") == 1
        await asyncio.sleep(0.05)
        stop.set()
        await reader
        assert await read_all(proxy) == data
        await proxy.aclose()

    asyncio.run(main())


def test_a_proxy_reopened_complete_switches_when_its_fill_starts(tmp_path: Path) -> None:
    async def main() -> None:
        data = pattern(MiB, 1)

        async def open_one() -> ProxyFilter:
            source = await memory_with(MiB, [(0, data)])
            cache = FileDevice(tmp_path / "cache", size=MiB)
            bitmap = PersistentBitmap.open(tmp_path / "bitmap", block_size=64 * 1024, disk_size=MiB)
            return ProxyFilter(source, cache, bitmap, auto_switch=True)

        (tmp_path / "cache").write_bytes(b"")
        first = await open_one()
        await first.cache(0, MiB)  # everything fetched on demand, no fill yet
        await first.aclose()
        second = await open_one()
        assert second.complete.is_set() and not second.switched
        second.start_fill()
        for _ in range(100):
            if second.switched:
                break
            await asyncio.sleep(0.01)
        assert second.switched
        assert await read_all(second) == data
        await second.aclose()

    asyncio.run(main())
