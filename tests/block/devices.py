"""Small devices the block tests stack over real ones to steer a single behaviour."""

from __future__ import annotations

import dataclasses
from typing import Any

from ovis.block import BlockDevice, Capabilities, Extent, Filter
from ovis.block._device import Buffer


class WithCapabilities(Filter):
    """`next` advertising different capabilities, to exercise the checks."""

    def __init__(self, next: BlockDevice, **changes: Any) -> None:
        super().__init__(next)
        self._caps = dataclasses.replace(next.capabilities, **changes)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps


class FixedExtents(Filter):
    """Answers extents() with a fixed list, however wrong, to test normalisation."""

    def __init__(self, next: BlockDevice, extents: list[Extent]) -> None:
        super().__init__(next)
        self.answer = extents

    async def extents(self, offset: int, length: int) -> list[Extent]:
        return list(self.answer)


class RaisesOSError(Filter):
    """Every data operation raises `exc`, as a failing host disk would."""

    def __init__(self, next: BlockDevice, exc: OSError) -> None:
        super().__init__(next)
        self.exc = exc

    async def read(self, offset: int, length: int) -> Buffer:
        raise self.exc

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        raise self.exc

    async def flush(self) -> None:
        raise self.exc

    async def aclose(self) -> None:
        await super().aclose()
        raise self.exc


class ShortRead(Filter):
    """Returns one byte less than asked."""

    async def read(self, offset: int, length: int) -> Buffer:
        return (await self.next.read(offset, length))[:-1]


class CountsCalls(Filter):
    """Counts the calls that reach `next`, to show what the checks stopped."""

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self.calls: list[str] = []

    async def read(self, offset: int, length: int) -> Buffer:
        self.calls.append("read")
        return await self.next.read(offset, length)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self.calls.append("write")
        await self.next.write(offset, data, fua=fua)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        self.calls.append("zero")
        await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)

    async def aclose(self) -> None:
        self.calls.append("aclose")
        await self.next.aclose()


class KeepOpen(Filter):
    """`next` with aclose not passed on, for a base shared by overlays opened in turn."""

    async def aclose(self) -> None:
        return None
