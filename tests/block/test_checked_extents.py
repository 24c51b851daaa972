"""CheckedDevice normalises what extents() returns, whatever the device said."""

from __future__ import annotations

import asyncio

import pytest

from ovis.block import CheckedDevice, Extent, MemoryDevice
from ovis.nbd._constants import StateFlag

from .devices import FixedExtents, WithCapabilities

HOLE = StateFlag.HOLE
ZERO = StateFlag.ZERO
SIZE = 1024 * 1024


def _extents(answer: list[Extent], offset: int, length: int) -> list[Extent]:
    device = CheckedDevice(FixedExtents(MemoryDevice(SIZE), answer))
    return asyncio.run(device.extents(offset, length))


@pytest.mark.parametrize(
    ("answer", "length", "expected"),
    [
        ([Extent(8192)], 4096, [Extent(4096)]),  # clipped to the request
        (
            [Extent(1000), Extent(8192, HOLE | ZERO)],
            4096,
            [Extent(1000), Extent(3096, HOLE | ZERO)],
        ),
        ([Extent(100), Extent(200), Extent(300, ZERO)], 1000, [Extent(300), Extent(300, ZERO)]),
        (
            [Extent(100, HOLE), Extent(50, HOLE), Extent(9, ZERO)],
            155,
            [Extent(150, HOLE), Extent(5, ZERO)],
        ),
        ([Extent(100), Extent(100), Extent(100)], 1000, [Extent(300)]),  # less than asked
        ([], 4096, [Extent(4096)]),  # nothing described: data is always true
        ([Extent(4096, StateFlag(0x84))], 4096, [Extent(4096)]),  # reserved bits cleared
        ([Extent(10, StateFlag(0x81)), Extent(10, HOLE)], 4096, [Extent(20, HOLE)]),
    ],
)
def test_normalised(answer: list[Extent], length: int, expected: list[Extent]) -> None:
    assert _extents(answer, 4096, length) == expected


def test_device_without_extents_is_one_data_extent() -> None:
    async def scenario() -> list[Extent]:
        sparse = MemoryDevice(SIZE)  # all holes, but it claims not to know
        device = CheckedDevice(WithCapabilities(sparse, can_extents=False))
        return await device.extents(512, 8192)

    assert asyncio.run(scenario()) == [Extent(8192)]
