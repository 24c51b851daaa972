"""CowFilter extents: overlay data is data, zeroed blocks are holes, the rest is the base's."""

from __future__ import annotations

import asyncio

from ovis.block import CheckedDevice, CowFilter, Extent, MemoryDevice
from ovis.block._memory import PAGE_SIZE
from ovis.nbd._constants import StateFlag

from .devices import WithCapabilities

HOLE_ZERO = StateFlag.HOLE | StateFlag.ZERO
BLOCK = 4096


def test_extents_combine_overlay_and_base() -> None:
    async def scenario() -> list[Extent]:
        base = MemoryDevice(4 * PAGE_SIZE)
        await base.write(2 * PAGE_SIZE, b"\x01" * PAGE_SIZE)  # base: hole, hole, data, hole
        device = CheckedDevice(CowFilter(base, block_size=BLOCK))
        await device.write(BLOCK, b"x")  # overlay data in block 1
        await device.zero(2 * PAGE_SIZE, BLOCK)  # base data zeroed in the overlay
        return await device.extents(0, 4 * PAGE_SIZE)

    assert asyncio.run(scenario()) == [
        Extent(BLOCK, HOLE_ZERO),  # base hole
        Extent(BLOCK),  # overlay data
        Extent(2 * PAGE_SIZE - BLOCK, HOLE_ZERO),  # base hole, then the zeroed block
        Extent(PAGE_SIZE - BLOCK),  # the rest of the base's data
        Extent(PAGE_SIZE, HOLE_ZERO),
    ]


def test_base_without_extents_is_data_never_a_hole() -> None:
    async def scenario() -> list[Extent]:
        base = WithCapabilities(MemoryDevice(PAGE_SIZE), can_extents=False)
        device = CheckedDevice(CowFilter(base, block_size=BLOCK))
        await device.trim(0, BLOCK)
        return await device.extents(0, PAGE_SIZE)

    assert asyncio.run(scenario()) == [Extent(BLOCK, HOLE_ZERO), Extent(PAGE_SIZE - BLOCK)]
