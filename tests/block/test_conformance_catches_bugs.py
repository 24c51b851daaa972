"""check_block_device fails, with a clear message, on devices that break the contract."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ovis.block import BlockDevice, BlockError, Capabilities, Extent, Filter, MemoryDevice
from ovis.block.testing import check_block_device
from ovis.nbd._constants import Errno, StateFlag

MiB = 1024 * 1024


class ZeroDoesNothing(Filter):
    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        return None


class ZeroSpillsOneByte(Filter):
    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self.next.zero(offset, min(length + 1, self.size - offset))


class TrimSpillsBackwards(Filter):
    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self.next.trim(max(0, offset - 1), length + 1)


class WriteDropsLastByte(Filter):
    async def write(
        self, offset: int, data: bytes | bytearray | memoryview, *, fua: bool = False
    ) -> None:
        await self.next.write(offset, memoryview(data)[:-1] if len(data) > 1 else data)


class ExtentsSayAllHoles(Filter):
    async def extents(self, offset: int, length: int) -> list[Extent]:
        return [Extent(length, StateFlag.HOLE | StateFlag.ZERO)]


class FastZeroHalfDoneThenENOTSUP(Filter):
    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self.next.zero(offset, length // 2)
        if fast:
            raise BlockError(Errno.ENOTSUP)
        await self.next.zero(offset, length)


class ClaimsReadOnly(Filter):
    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(
            self.next.capabilities,
            can_write=False,
            can_trim=False,
            can_zero=False,
            can_fast_zero=False,
        )


CASES: list[tuple[type[Filter], str]] = [
    (ZeroDoesNothing, r"after zero\("),
    (ZeroSpillsOneByte, r"after zero\("),
    (TrimSpillsBackwards, r"after trim\("),
    (WriteDropsLastByte, r"after write\("),
    (ExtentsSayAllHoles, r"over data written"),
    (FastZeroHalfDoneThenENOTSUP, r"after zero\(fast=True\)"),
]


@pytest.mark.parametrize(("broken", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_suite_catches(broken: type[Filter], message: str) -> None:
    async def factory() -> BlockDevice:
        return broken(MemoryDevice(2 * MiB))

    with pytest.raises(AssertionError, match=message):
        asyncio.run(check_block_device(factory))


def test_suite_catches_a_device_too_small() -> None:
    async def factory() -> BlockDevice:
        return MemoryDevice(MiB // 2)

    with pytest.raises(AssertionError, match="at least 1 MiB"):
        asyncio.run(check_block_device(factory))


def test_suite_catches_writability_mismatch() -> None:
    async def writable() -> BlockDevice:
        return MemoryDevice(2 * MiB)

    async def read_only() -> BlockDevice:
        return ClaimsReadOnly(MemoryDevice(2 * MiB))

    with pytest.raises(AssertionError, match="can_write=True"):
        asyncio.run(check_block_device(writable, writable=False))
    with pytest.raises(AssertionError, match="can_write=False"):
        asyncio.run(check_block_device(read_only, writable=True))
