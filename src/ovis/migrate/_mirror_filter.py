"""MirrorFilter: the filter a mirror job sits on, qemu's mirror_top node.

It stays in every export's stack, and while no job is attached it passes
everything through (counting writes in flight, so that attaching can drain
them).  A `MirrorJob` attaches it and moves it through three modes:

- TRACKING: every write, zero and trim marks the blocks it touched in the
  job's dirty bitmap, *after* it completes on the source (even if it failed:
  the source may have changed).  The job clears a block's bit *before* it
  reads the block from the source.  Together these mean a write is either
  seen by the job's read or leaves its bit set for the next pass; it is
  never lost.
- gate closed (the final pause): new writes, zeros and trims wait; `drained`
  returns once those in flight have finished, after which the dirty bitmap
  cannot change.  Reads, flushes and extents never wait.
- WRITE_THROUGH (after the pause, until the job is finished or cancelled):
  every write goes to the source and the destination at once, so the two
  stay identical until the client pivots.  Overlapping writes are
  serialised by a range lock, so both sides apply them in the same order
  (qemu's active mirror, DRBD's protocol C).  A trim is applied to the
  source and then the range is copied, because trim may leave either the
  old bytes or zeros and the two sides must agree.

Failure: the client's request always follows the source: a source failure
reaches the client, a destination failure does not.  In WRITE_THROUGH any
failure, and a request cancelled half way, may leave the two sides
different, so it is reported to the job through `on_mirror_error`, which
fails the job and detaches the filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable

from ovis.block._device import BlockDevice, Buffer, Transparent

from ._bitmap import Bitmap
from ._copy import copy_range
from ._errors import MigrationError


class Mode(enum.Enum):
    PASSTHROUGH = "passthrough"
    TRACKING = "tracking"
    WRITE_THROUGH = "write-through"


class RangeLock:
    """Holds byte ranges; a range waits while an overlapping one is held."""

    def __init__(self) -> None:
        self._held: list[tuple[int, int, asyncio.Event]] = []

    @contextlib.asynccontextmanager
    async def hold(self, offset: int, length: int) -> AsyncIterator[None]:
        end = offset + length
        while True:
            conflict = next((ev for s, e, ev in self._held if s < end and offset < e), None)
            if conflict is None:
                break
            await conflict.wait()
        entry = (offset, end, asyncio.Event())
        self._held.append(entry)
        try:
            yield
        finally:
            self._held.remove(entry)
            entry[2].set()


class MirrorFilter(Transparent):
    """`next` (the source), with the write tracking a mirror job needs."""

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self.mode = Mode.PASSTHROUGH
        self.dirty: Bitmap | None = None
        self.granularity = 0
        self._destination: BlockDevice | None = None
        self._on_mirror_error: Callable[[BaseException], None] | None = None
        self._gate = asyncio.Event()
        self._gate.set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ranges = RangeLock()
        self._attaching = False

    # -- what the job calls --------------------------------------------------------------
    async def attach(self, granularity: int) -> Bitmap:
        """Start tracking with every block dirty (a full copy); returns the bitmap.

        Writes are held while those in flight drain, so that none started
        before tracking can land after the job has copied its block.
        Raises MigrationError if a job is attached already.
        """
        if self.mode is not Mode.PASSTHROUGH or self._attaching:
            raise MigrationError("a mirror job is already running on this export")
        self._attaching = True
        self.close_gate()
        try:
            await self.drained()
            self.granularity = granularity
            self.dirty = Bitmap(-(-self.size // granularity))
            self.dirty.set(0, self.dirty.nbits)
            self.mode = Mode.TRACKING
        finally:
            self._attaching = False
            self.open_gate()
        return self.dirty

    def close_gate(self) -> None:
        self._gate.clear()

    async def drained(self) -> None:
        """Wait until no write, zero or trim is in flight."""
        await self._idle.wait()

    def write_through(
        self, destination: BlockDevice, on_mirror_error: Callable[[BaseException], None]
    ) -> None:
        """Switch TRACKING to WRITE_THROUGH; only while the gate is closed and drained."""
        assert not self._gate.is_set() and self._idle.is_set(), "gate must be closed and drained"
        self._destination = destination
        self._on_mirror_error = on_mirror_error
        self.mode = Mode.WRITE_THROUGH

    def detach(self) -> None:
        """Back to PASSTHROUGH with the gate open; safe to call in any mode."""
        self.mode = Mode.PASSTHROUGH
        self.dirty = None
        self._destination = None
        self._on_mirror_error = None
        self._gate.set()

    def open_gate(self) -> None:
        self._gate.set()

    def passes(self, write: bool) -> bool:
        # Untracked, as write() in passthrough: a write done at once is never in flight.
        return not write or (self.mode is Mode.PASSTHROUGH and self._gate.is_set())

    # -- the gated write path ---------------------------------------------------------------
    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def _writing(self, offset: int, length: int) -> AsyncIterator[Mode]:
        while not self._gate.is_set():
            await self._gate.wait()
        mode, dirty = self.mode, self.dirty
        self._enter()
        try:
            if mode is Mode.WRITE_THROUGH:
                async with self._ranges.hold(offset, length):
                    yield mode
            else:
                yield mode
        finally:
            if mode is Mode.TRACKING and dirty is not None:
                first = offset // self.granularity
                dirty.set(first, -(-(offset + length) // self.granularity) - first)
            self._leave()

    async def _both(
        self, on_source: Awaitable[None], on_destination: Callable[[BlockDevice], Awaitable[None]]
    ) -> None:
        """Run a change on the source and the destination together."""
        destination = self._destination
        if destination is None:  # the job ended while this request waited
            await on_source
            return
        try:
            results = await asyncio.gather(
                on_source, on_destination(destination), return_exceptions=True
            )
        except asyncio.CancelledError as exc:  # one side may have changed, the other not
            self._report(exc)
            raise
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            self._report(failure)
        if isinstance(results[0], BaseException):
            raise results[0]

    def _report(self, exc: BaseException) -> None:
        if self._on_mirror_error is not None:
            self._on_mirror_error(exc)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        if self.mode is Mode.PASSTHROUGH and self._gate.is_set():
            self._enter()  # counted even now: attach drains what is in flight
            try:
                await self.next.write(offset, data, fua=fua)
            finally:
                self._leave()
            return
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        async with self._writing(offset, length) as mode:
            if mode is Mode.WRITE_THROUGH:
                await self._both(
                    self.next.write(offset, data, fua=fua),
                    lambda dest: dest.write(offset, data, fua=fua),
                )
            else:
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
        if self.mode is Mode.PASSTHROUGH and self._gate.is_set():
            self._enter()
            try:
                await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
            finally:
                self._leave()
            return
        async with self._writing(offset, length) as mode:
            source = self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
            if mode is not Mode.WRITE_THROUGH:
                await source
                return
            if fast:  # ENOTSUP from the source must change nothing on either side
                await source
                source = _done()
            await self._both(
                source, lambda dest: dest.zero(offset, length, may_trim=may_trim, fua=fua)
            )

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        if self.mode is Mode.PASSTHROUGH and self._gate.is_set():
            self._enter()
            try:
                await self.next.trim(offset, length, fua=fua)
            finally:
                self._leave()
            return
        async with self._writing(offset, length) as mode:
            if mode is not Mode.WRITE_THROUGH:
                await self.next.trim(offset, length, fua=fua)
                return
            try:
                await self.next.trim(offset, length, fua=fua)
            except BaseException as exc:  # the source may be half trimmed
                self._report(exc)
                raise
            await self._both(_done(), lambda dest: self._copy_back(dest, offset, length, fua))

    async def _copy_back(self, dest: BlockDevice, offset: int, length: int, fua: bool) -> None:
        await copy_range(self.next, dest, offset, length)
        if fua:
            await dest.flush()

    async def flush(self) -> None:
        destination = self._destination
        if self.mode is Mode.WRITE_THROUGH and destination is not None:
            await self._both(self.next.flush(), lambda dest: dest.flush())
        else:
            await self.next.flush()


async def _done() -> None:
    return None
