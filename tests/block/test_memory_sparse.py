"""MemoryDevice is sparse: unwritten space is a zero hole, and trim/zero free pages."""

from __future__ import annotations

import asyncio
import time

from ovis.block import CheckedDevice, Extent, MemoryDevice
from ovis.block._memory import PAGE_SIZE
from ovis.nbd._constants import StateFlag

HOLE_ZERO = StateFlag.HOLE | StateFlag.ZERO
TiB = 1 << 40


def test_unwritten_space_reads_zero_and_is_a_zero_hole() -> None:
    async def scenario() -> None:
        memory = MemoryDevice(4 * PAGE_SIZE)
        device = CheckedDevice(memory)
        assert await device.read(100, 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)
        assert await device.extents(0, 4 * PAGE_SIZE) == [Extent(4 * PAGE_SIZE, HOLE_ZERO)]
        assert memory.allocated_pages == 0

    asyncio.run(scenario())


def test_written_pages_are_data_and_the_rest_holes() -> None:
    async def scenario() -> None:
        memory = MemoryDevice(4 * PAGE_SIZE)
        device = CheckedDevice(memory)
        await device.write(PAGE_SIZE + 10, b"x")
        assert memory.allocated_pages == 1
        assert await device.extents(0, 4 * PAGE_SIZE) == [
            Extent(PAGE_SIZE, HOLE_ZERO),
            Extent(PAGE_SIZE),
            Extent(2 * PAGE_SIZE, HOLE_ZERO),
        ]

    asyncio.run(scenario())


def test_trim_and_zero_free_whole_pages_and_pages_zeroed_piecemeal() -> None:
    async def scenario() -> None:
        memory = MemoryDevice(8 * PAGE_SIZE)
        device = CheckedDevice(memory)
        await device.write(0, b"\xff" * 8 * PAGE_SIZE)
        await device.trim(0, 2 * PAGE_SIZE)
        assert memory.allocated_pages == 6
        await device.zero(2 * PAGE_SIZE, PAGE_SIZE + 1)  # one page and one byte of the next
        assert memory.allocated_pages == 5
        await device.zero(3 * PAGE_SIZE + 1, PAGE_SIZE - 1)  # the rest of that page
        assert memory.allocated_pages == 4
        assert await device.read(0, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE)
        assert await device.read(4 * PAGE_SIZE, PAGE_SIZE) == b"\xff" * PAGE_SIZE

    asyncio.run(scenario())


def test_a_huge_sparse_disk_costs_only_what_is_written() -> None:
    async def scenario() -> None:
        memory = MemoryDevice(TiB)
        device = CheckedDevice(memory)
        await device.write(TiB - 3, b"end")
        await device.write(12345, b"start")
        assert memory.allocated_pages == 2
        started = time.monotonic()
        await device.zero(1, TiB - 2)  # visits the two pages, not 16 million
        assert time.monotonic() - started < 1.0
        assert await device.read(0, 1) == b"\0"
        assert await device.read(TiB - 1, 1) == b"d"
        assert memory.allocated_pages == 1  # page 0 became all zeros and was dropped
        started = time.monotonic()
        extents = await device.extents(0, TiB)  # a prefix, answered in bounded time
        assert time.monotonic() - started < 1.0
        assert len(extents) == 1
        assert extents[0].flags == HOLE_ZERO
        assert PAGE_SIZE <= extents[0].length < TiB

    asyncio.run(scenario())
