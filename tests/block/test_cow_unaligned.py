"""CowFilter read-modify-writes partial blocks from the current view, never losing a write."""

from __future__ import annotations

import asyncio

from ovis.block import CheckedDevice, CowFilter, DelayFilter, MemoryDevice, ReadOnlyFilter

BLOCK = 4096


async def _base(size: int) -> MemoryDevice:
    base = MemoryDevice(size)
    await base.write(0, bytes(range(256)) * (size // 256))
    return base


def test_unaligned_write_keeps_the_rest_of_the_block_from_the_base() -> None:
    async def scenario() -> None:
        base = await _base(4 * BLOCK)
        original = bytes(await base.read(0, 4 * BLOCK))
        device = CheckedDevice(CowFilter(ReadOnlyFilter(base), block_size=BLOCK))
        await device.write(BLOCK - 3, b"abcdef")  # the tail of block 0, the head of block 1
        expected = bytearray(original)
        expected[BLOCK - 3 : BLOCK + 3] = b"abcdef"
        assert await device.read(0, 4 * BLOCK) == expected
        assert await base.read(0, 4 * BLOCK) == original

    asyncio.run(scenario())


def test_unaligned_write_over_overlay_data_and_zeroed_blocks() -> None:
    async def scenario() -> None:
        base = await _base(4 * BLOCK)
        device = CheckedDevice(CowFilter(base, block_size=BLOCK))
        await device.write(0, b"\xee" * BLOCK)  # block 0 now in the overlay
        await device.zero(BLOCK, BLOCK)  # block 1 zero
        await device.write(BLOCK - 2, b"wxyz")
        assert await device.read(0, 2 * BLOCK) == (
            b"\xee" * (BLOCK - 2) + b"wxyz" + bytes(BLOCK - 2)
        )

    asyncio.run(scenario())


def test_concurrent_unaligned_writes_to_one_block_both_land() -> None:
    """Two RMWs of one block, interleaved by a slow base, must not undo each other."""

    async def scenario() -> None:
        base = await _base(4 * BLOCK)
        slow = DelayFilter(base, delay_s=0.01, ops={"read"})
        device = CheckedDevice(CowFilter(slow, block_size=BLOCK))
        writes = [device.write(offset, b"%03d" % offset) for offset in range(0, 400, 100)]
        await asyncio.gather(*writes)
        block = await device.read(0, BLOCK)
        for offset in range(0, 400, 100):
            assert block[offset : offset + 3] == b"%03d" % offset

    asyncio.run(scenario())


def test_unaligned_zero_and_trim_leave_neighbours_alone() -> None:
    async def scenario() -> None:
        base = await _base(8 * BLOCK)
        original = bytes(await base.read(0, 8 * BLOCK))
        device = CheckedDevice(CowFilter(base, block_size=BLOCK))
        await device.zero(BLOCK + 1, 3 * BLOCK)
        expected = bytearray(original)
        expected[BLOCK + 1 : 4 * BLOCK + 1] = bytes(3 * BLOCK)
        assert await device.read(0, 8 * BLOCK) == expected
        await device.trim(5 * BLOCK + 1, 2 * BLOCK)  # rounds inward: only block 6
        expected[6 * BLOCK : 7 * BLOCK] = bytes(BLOCK)
        assert await device.read(0, 8 * BLOCK) == expected
        assert await base.read(0, 8 * BLOCK) == original

    asyncio.run(scenario())
