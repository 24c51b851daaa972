"""The write gate above each shared export: drain and hold writes, or refuse them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ovis.block._device import BlockDevice, BlockError, Buffer, Filter
from ovis.nbd._constants import Errno


class WriteGate(Filter):
    """Counts writes in flight and can hold new ones while a snapshot is taken.

    Once `retire()`d (the export migrated away) every write gets EPERM, so no
    write can be acknowledged on a copy that is no longer authoritative.
    """

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self.retired = False
        self._in_flight = 0
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def _enter(self) -> None:
        # Plain calls, not a context manager: this is on every write's path.
        while not self._open.is_set():
            await self._open.wait()
        if self.retired:
            raise BlockError(Errno.EPERM, "export has migrated: its source is read-only")
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Drain the writes in flight and hold new ones until the block exits."""
        self._open.clear()
        try:
            await self._idle.wait()
            await self.next.flush()
            yield
        finally:
            self._open.set()

    def retire(self) -> None:
        """Refuse every later write (call while holding the gate)."""
        self.retired = True

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self._enter()
        try:
            await self.next.write(offset, data, fua=fua)
        finally:
            self._leave()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self._enter()
        try:
            await self.next.trim(offset, length, fua=fua)
        finally:
            self._leave()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self._enter()
        try:
            await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
        finally:
            self._leave()
