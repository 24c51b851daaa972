"""copy_range: copy bytes from one device to another, keeping holes holes.

Why one function: the proxy's fill (source → local cache) and the mirror's
passes (source → destination) do the same thing, and both should neither
send nor store zeros.  Where `use_extents` is set and the source can tell,
ranges it reports as ZERO are zeroed on the destination (`may_trim=True`,
so a file or a sparse export punches a hole) instead of being read; data
that reads back as all zeros is zeroed the same way.

Alignment: zero ranges are shrunk inward to the larger of the two devices'
`min_block`, and what is cut off is copied as data, so every request either
device sees is aligned (or ends at the end of the range, which callers keep
aligned or at the end of the device).

Failure: the first BlockError (or OSError) from either device propagates;
the destination range then holds a mix of old and new bytes, which the
callers account for by not marking the range as copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ovis.block._device import BlockDevice, BlockError, Buffer, Extent, Filter, MiB
from ovis.nbd._constants import StateFlag

from ._rate import RateLimiter

_ZEROS = bytes(MiB)
T = TypeVar("T")


def is_zero(data: Buffer) -> bool:
    """True if every byte of `data` is zero (memcmp, chunk by chunk)."""
    view = memoryview(data).cast("B")
    for pos in range(0, len(view), MiB):
        piece = view[pos : pos + MiB]
        if piece != _ZEROS[: len(piece)]:
            return False
    return True


@dataclasses.dataclass(slots=True)
class Copied:
    """What a copy moved: bytes read and written as data, bytes zeroed instead."""

    data_bytes: int = 0
    zero_bytes: int = 0

    def add(self, other: Copied) -> None:
        self.data_bytes += other.data_bytes
        self.zero_bytes += other.zero_bytes


async def copy_range(
    source: BlockDevice,
    destination: BlockDevice,
    offset: int,
    length: int,
    *,
    use_extents: bool = True,
    limiter: RateLimiter | None = None,
) -> Copied:
    """Make destination[offset, offset+length) equal source's; see the module docstring.

    `limiter` paces the bytes read as data (zeroed ranges cost nothing).
    """
    align = max(source.capabilities.min_block, destination.capabilities.min_block)
    end = offset + length
    pieces = (
        await classify(source, offset, end, align)
        if use_extents and source.capabilities.can_extents
        else [(offset, end, False)]
    )
    copied = Copied()
    step = max(
        min(source.capabilities.max_block, destination.capabilities.max_block, 4 * MiB)
        // align
        * align,
        align,
    )
    for start, stop, zero in pieces:
        if zero:
            await destination.zero(start, stop - start, may_trim=True)
            copied.zero_bytes += stop - start
            continue
        for pos in range(start, stop, step):
            n = min(step, stop - pos)
            if limiter is not None:
                await limiter.acquire(n)
            data = await source.read(pos, n)
            if is_zero(data):
                await destination.zero(pos, n, may_trim=True)
                copied.zero_bytes += n
            else:
                await destination.write(pos, data)
                copied.data_bytes += n
    return copied


async def classify(
    source: BlockDevice, offset: int, end: int, align: int
) -> list[tuple[int, int, bool]]:
    """(start, stop, is_zero) pieces covering [offset, end), zero pieces aligned."""
    pieces: list[tuple[int, int, bool]] = []
    pending = offset  # start of data not yet emitted
    pos = offset
    while pos < end:
        extents = await source.extents(pos, end - pos)
        if not extents:  # a device that describes nothing: call the rest data
            break
        for extent in extents:
            stop = min(pos + extent.length, end)
            if extent.flags & StateFlag.ZERO:
                z_start = -(-pos // align) * align
                z_stop = stop if stop == end else stop // align * align
                if z_start < z_stop:
                    if pending < z_start:
                        pieces.append((pending, z_start, False))
                    _append_zero(pieces, z_start, z_stop)
                    pending = z_stop
            pos = stop
            if pos >= end:
                break
    if pending < end:
        pieces.append((pending, end, False))
    return pieces


def _append_zero(pieces: list[tuple[int, int, bool]], start: int, stop: int) -> None:
    if pieces and pieces[-1][2] and pieces[-1][1] == start:
        pieces[-1] = (pieces[-1][0], stop, True)
    else:
        pieces.append((start, stop, True))


class Labelled(Filter):
    """`next`, whose errors say which side failed ("destination: remote connection: ...").

    The errno is kept; only the message changes, so a job's `error` (and
    `ovis migrate status`) tells a lost destination from a failing source.
    """

    def __init__(self, next: BlockDevice, label: str) -> None:
        super().__init__(next)
        self.label = label

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except BlockError as exc:
            raise BlockError(exc.errno, f"{self.label}: {exc}") from exc
        except OSError as exc:
            raise OSError(exc.errno, f"{self.label}: {exc.strerror or exc}") from exc

    async def read(self, offset: int, length: int) -> Buffer:
        return await self._call(lambda: self.next.read(offset, length))

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self._call(lambda: self.next.write(offset, data, fua=fua))

    async def flush(self) -> None:
        await self._call(self.next.flush)

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self._call(lambda: self.next.trim(offset, length, fua=fua))

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self._call(
            lambda: self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
        )

    async def extents(self, offset: int, length: int) -> list[Extent]:
        return await self._call(lambda: self.next.extents(offset, length))
