"""Fault injection as devices: nbdkit's error and delay filters.

Why first-class filters rather than mocks: a test of the server, the proxy
or the mirror stacks one of these over a real device and sees exactly what a
failing or slow disk would produce, through the same interface and the same
checks as production stacks.

Both take `ops`, a set of operation names from `OPS`, and touch nothing
else: capabilities, size and aclose pass through unchanged.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import Iterable

from ovis.block._device import BlockDevice, BlockError, Buffer, Extent, Filter
from ovis.nbd._constants import Errno

OPS = frozenset({"read", "write", "flush", "trim", "zero", "cache", "extents"})


def _op_set(ops: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(ops)
    if unknown := chosen - OPS:
        raise ValueError(f"unknown operations {sorted(unknown)}; choose from {sorted(OPS)}")
    return chosen


class _OpHook(Filter):
    """Calls `_before(op)` ahead of every data operation, then passes it on."""

    @abc.abstractmethod
    async def _before(self, op: str) -> None: ...

    async def read(self, offset: int, length: int) -> Buffer:
        await self._before("read")
        return await self.next.read(offset, length)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self._before("write")
        await self.next.write(offset, data, fua=fua)

    async def flush(self) -> None:
        await self._before("flush")
        await self.next.flush()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self._before("trim")
        await self.next.trim(offset, length, fua=fua)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self._before("zero")
        await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)

    async def cache(self, offset: int, length: int) -> None:
        await self._before("cache")
        await self.next.cache(offset, length)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        await self._before("extents")
        return await self.next.extents(offset, length)


class ErrorFilter(_OpHook):
    """Fails the chosen `ops` with BlockError(`errno`), each with probability `rate`.

    The failure happens before `next` is called, so a failed write changes
    nothing.  `seed` makes a run with 0 < rate < 1 repeatable.
    """

    def __init__(
        self,
        next: BlockDevice,
        *,
        errno: Errno = Errno.EIO,
        ops: Iterable[str] = OPS,
        rate: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {rate}")
        if errno is Errno.OK:
            raise ValueError("an injected error needs a non-zero errno")
        super().__init__(next)
        self.errno = errno
        self.ops = _op_set(ops)
        self.rate = rate
        self._random = random.Random(seed)

    async def _before(self, op: str) -> None:
        if op in self.ops and (self.rate >= 1.0 or self._random.random() < self.rate):
            raise BlockError(self.errno, f"injected error on {op}")


class DelayFilter(_OpHook):
    """Sleeps `delay_s` seconds (without blocking the loop) before the chosen `ops`."""

    def __init__(self, next: BlockDevice, *, delay_s: float, ops: Iterable[str] = OPS) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must not be negative, not {delay_s}")
        super().__init__(next)
        self.delay_s = delay_s
        self.ops = _op_set(ops)

    async def _before(self, op: str) -> None:
        if op in self.ops:
            await asyncio.sleep(self.delay_s)
