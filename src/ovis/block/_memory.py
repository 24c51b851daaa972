"""MemoryDevice: a sparse disk held in RAM, nbdkit's memory plugin.

Why: tests, benchmarks of the layers above, and scratch exports need a disk
with no I/O underneath.  It is sparse so that a large virtual size costs only
what has been written: the disk is a dict of fixed-size pages, an absent page
reads as zeros and is reported as a HOLE|ZERO extent, and trim and zero drop
whole pages (a page zeroed piecemeal is dropped once it is all zero).  RAM use
is bounded by `size`.

All connections share the one dict, so writes are visible and "durable"
everywhere at once: flush is a no-op and multi-conn is safe.
"""

from __future__ import annotations

from collections.abc import Iterator

from ovis.block._device import BlockDevice, Buffer, Capabilities, Extent, MiB
from ovis.nbd._constants import StateFlag

PAGE_SIZE = 64 * 1024
_ZERO_PAGE = bytes(PAGE_SIZE)
_HOLE = StateFlag.HOLE | StateFlag.ZERO
# extents() walks at most this many pages per call; the contract lets a
# device describe less than was asked, and it bounds the time of one call.
_MAX_EXTENT_PAGES = 16384


class MemoryDevice(BlockDevice):
    """A sparse in-memory disk of `size` bytes that starts out all zeros."""

    def __init__(
        self,
        size: int,
        *,
        min_block: int = 1,
        preferred_block: int = 4096,
        max_block: int = 32 * MiB,
    ) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative, not {size}")
        self._size = size
        self._pages: dict[int, bytearray] = {}
        self._caps = Capabilities(
            can_trim=True,
            can_zero=True,
            can_fast_zero=True,
            can_cache=True,
            can_extents=True,
            can_multi_conn=True,
            min_block=min_block,
            preferred_block=preferred_block,
            max_block=max_block,
        )

    @property
    def size(self) -> int:
        return self._size

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def allocated_pages(self) -> int:
        """Pages currently held; lets tests see that trim and zero free memory."""
        return len(self._pages)

    @staticmethod
    def _spans(offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """Yield (page index, offset in page, length, offset in request)."""
        index, start = divmod(offset, PAGE_SIZE)
        done = 0
        while done < length:
            n = min(PAGE_SIZE - start, length - done)
            yield index, start, n, done
            done += n
            index += 1
            start = 0

    async def read(self, offset: int, length: int) -> Buffer:
        index, start = divmod(offset, PAGE_SIZE)
        if start + length <= PAGE_SIZE:  # within one page: a single copy
            page = self._pages.get(index)
            if page is None:
                return bytes(length)
            return memoryview(page)[start : start + length].tobytes()
        out = bytearray(length)
        for index, start, n, done in self._spans(offset, length):
            page = self._pages.get(index)
            if page is not None:
                out[done : done + n] = memoryview(page)[start : start + n]
        return out

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        view = memoryview(data).cast("B")
        for index, start, n, done in self._spans(offset, len(view)):
            page = self._pages.get(index)
            if page is None:
                page = self._pages[index] = bytearray(PAGE_SIZE)
            page[start : start + n] = view[done : done + n]

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        self._discard(offset, length)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        # Dropping pages is always the fast way, so `fast` never fails here;
        # and no page means zeros, so NO_HOLE (may_trim=False) changes nothing.
        self._discard(offset, length)

    def _discard(self, offset: int, length: int) -> None:
        first_full = -(-offset // PAGE_SIZE)
        end_full = (offset + length) // PAGE_SIZE
        if end_full - first_full > len(self._pages):
            # A huge range over a sparse disk: visit the pages that exist.
            for index in [i for i in self._pages if first_full <= i < end_full]:
                del self._pages[index]
            head = min(length, first_full * PAGE_SIZE - offset)
            self._zero_partial(offset, head)
            tail_start = max(offset, end_full * PAGE_SIZE)
            self._zero_partial(tail_start, offset + length - tail_start)
            return
        self._zero_partial(offset, length)

    def _zero_partial(self, offset: int, length: int) -> None:
        for index, start, n, _ in self._spans(offset, length):
            page = self._pages.get(index)
            if page is None:
                continue
            if n == PAGE_SIZE:
                del self._pages[index]
                continue
            page[start : start + n] = _ZERO_PAGE[:n]
            if page == _ZERO_PAGE:
                del self._pages[index]

    async def extents(self, offset: int, length: int) -> list[Extent]:
        out: list[Extent] = []
        for count, (index, _, n, _) in enumerate(self._spans(offset, length)):
            if count == _MAX_EXTENT_PAGES:
                break
            flags = StateFlag(0) if index in self._pages else _HOLE
            if out and out[-1].flags == flags:
                out[-1] = Extent(out[-1].length + n, flags)
            else:
                out.append(Extent(n, flags))
        return out

    async def aclose(self) -> None:
        self._pages.clear()
