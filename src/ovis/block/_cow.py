"""CowFilter: a private copy-on-write view over a base that is never modified.

Why: nbd-server's -c, qemu-nbd --snapshot and nbdkit's cow filter let a
client write to an export whose image must stay as it is (a golden image,
a read-only base, a test run to throw away).  `--cow-persist PATH` keeps the
overlay so that a later run continues where this one stopped.

How: `Overlay` (in _cow_overlay) stores blocks and their states; this module
decides what each request does to them.  A request is split into a head and
a tail (partial blocks) and an aligned body:
- write: the body goes straight to the overlay; a partial block already in
  the overlay is patched in place, any other is read from the current view,
  patched and stored whole (read-modify-write).
- zero: the body's blocks become ZERO; partial blocks get zeros written as
  above.  Marking blocks is always fast, so FAST_ZERO never fails.
- trim: the body's blocks become ZERO (trim may read back as zeros); partial
  blocks are left alone, since trim may round inward.
- read and extents: per run of blocks, the overlay, zeros, or the base.
  Base runs are described by the base, so data is never reported as a hole.

Read-modify-writes are serialised by one lock: two writes to different
bytes of one block would otherwise each read the old block and the second
store would undo the first.

Each connection gets its own overlay (the server's doing), so writes on one
connection are not visible on another: not multi-conn.  A throw-away overlay
has nothing to make durable; a persisted one makes flush and FUA fdatasync
the overlay (never the base, which is never written).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

from ovis.block._cow_overlay import BlockState, Overlay
from ovis.block._device import BlockDevice, Buffer, Capabilities, Extent, Filter
from ovis.nbd._constants import StateFlag

_HOLE = StateFlag.HOLE | StateFlag.ZERO
_MAX_EXTENTS = 1024


class CowFilter(Filter):
    """Writes to `next` land in a private overlay; `next` itself is only read.

    `overlay_path` persists the overlay (and its map beside it, as
    `overlay_path + ".bitmap"`); reopening the same path over the same base
    continues with it.  `block_size` is the copy-on-write unit: a power of
    two of at least 4 KiB (the page cache's unit; smaller blocks only grow
    the map) and at least the base's `min_block`.
    """

    def __init__(
        self,
        next: BlockDevice,
        *,
        overlay_path: str | os.PathLike[str] | None = None,
        block_size: int = 64 * 1024,
    ) -> None:
        base = next.capabilities
        if block_size < 4096 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 4096, not {block_size}")
        if not base.min_block <= block_size <= base.max_block:
            raise ValueError(f"block_size {block_size} does not fit the base's block sizes")
        super().__init__(next)
        self._bs = block_size
        self._overlay = Overlay(next.size, block_size, overlay_path)
        self._rmw_lock = asyncio.Lock()
        # The largest base read: whole blocks, within the base's payload limit.
        self._base_chunk = base.max_block // block_size * block_size
        self._base_extents = base.can_extents
        self._base_cache = base.can_cache
        self._caps = dataclasses.replace(
            base,
            can_write=True,
            can_flush=True,
            can_fua=True,
            can_trim=True,
            can_zero=True,
            can_fast_zero=True,
            can_cache=True,
            can_extents=True,
            can_multi_conn=False,
            preferred_block=max(base.preferred_block, block_size),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _runs(self, offset: int, end: int) -> list[tuple[BlockState, int, int]]:
        """Runs of equal block state over [offset, end), as (state, start, stop) bytes."""
        bs = self._bs
        return [
            (state, max(offset, first * bs), min(end, (first + count) * bs))
            for state, first, count in self._overlay.runs(offset // bs, -(-end // bs))
        ]

    async def read(self, offset: int, length: int) -> Buffer:
        parts: list[Buffer] = []
        for state, start, stop in self._runs(offset, offset + length):
            if state is BlockState.DATA:
                parts.append(self._overlay.read(start, stop - start))
            elif state is BlockState.ZERO:
                parts.append(bytes(stop - start))
            else:
                for pos in range(start, stop, self._base_chunk):
                    n = min(self._base_chunk, stop - pos)
                    parts.append(await self.next.read(pos, n))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self._store(offset, memoryview(data).cast("B"))
        if fua:
            await self._overlay.sync()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self._store(offset, None, length)
        if fua:
            await self._overlay.sync()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        first = -(-offset // self._bs)
        end = offset + length
        # A partial last block counts as whole when the range reaches the disk's end.
        stop = self._overlay.nblocks if end == self.size else end // self._bs
        if stop > first:
            self._overlay.mark_zero(first, stop - first)
        if fua:
            await self._overlay.sync()

    async def _store(self, offset: int, data: memoryview | None, length: int = 0) -> None:
        """Write `data` at `offset`, or `length` zeros when `data` is None."""
        if data is not None:
            length = len(data)
        bs = self._bs
        end = offset + length
        pos = offset
        if pos % bs:  # head: starts inside a block
            stop = min(end, (pos // bs + 1) * bs)
            await self._store_partial(pos, _slice(data, 0, stop - pos), stop - pos)
            pos = stop
        if pos >= end:
            return
        tail_start = (end - 1) // bs * bs
        body_end = end if end == self.size or end % bs == 0 else tail_start
        if body_end > pos:
            if data is None:
                self._overlay.mark_zero(pos // bs, -(-(body_end - pos) // bs))
            else:
                self._overlay.write(pos, data[pos - offset : body_end - offset])
        if body_end < end:  # tail: ends inside a block
            start = max(pos, tail_start)
            await self._store_partial(start, _slice(data, start - offset, length), end - start)

    async def _store_partial(self, offset: int, data: Buffer | None, length: int) -> None:
        """Write part of one block: in place if the overlay has it, else read-modify-write."""
        block = offset // self._bs
        async with self._rmw_lock:
            state = self._overlay.state(block)
            if data is None and state is BlockState.ZERO:
                return
            piece = bytes(length) if data is None else data
            if state is BlockState.DATA:
                self._overlay.write(offset, piece)
                return
            start, span = self._overlay.span(block)
            content = bytearray(await self.read(start, span))
            content[offset - start : offset - start + length] = piece
            self._overlay.write(start, content)

    async def flush(self) -> None:
        await self._overlay.sync()

    async def cache(self, offset: int, length: int) -> None:
        if self._base_cache:
            await self.next.cache(offset, length)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        out: list[Extent] = []
        for state, start, stop in self._runs(offset, offset + length):
            if len(out) >= _MAX_EXTENTS:
                break
            if state is BlockState.DATA:
                out.append(Extent(stop - start))
            elif state is BlockState.ZERO:
                out.append(Extent(stop - start, _HOLE))
            elif not self._base_extents:
                out.append(Extent(stop - start))
            else:
                described = 0
                for extent in await self.next.extents(start, stop - start):
                    n = min(extent.length, stop - start - described)
                    if n <= 0:
                        break
                    out.append(Extent(n, extent.flags))
                    described += n
                if described < stop - start:
                    break  # the base described less than the run; so do we
        return out

    async def aclose(self) -> None:
        try:
            await self._overlay.aclose()
        finally:
            await self.next.aclose()


def _slice(data: memoryview | None, start: int, stop: int) -> memoryview | None:
    return None if data is None else data[start:stop]
