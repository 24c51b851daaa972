"""CacheMap: which blocks a proxy's cache holds, and who is filling which.

Design note (the proxy decides what a request means; this module owns the
block mechanics, as nbdkit's cow.c and blk.c split them):

- A set bit in `bitmap` means the cache is authoritative for that block.
  Bits are set only after the block's bytes are in the cache, and never
  cleared, so a cached block stays cached.
- A block being filled has a claim: a future in `_claims`, shared by every
  block one caller claimed at once.  Whoever finds a block neither cached
  nor claimed claims it, fills it, marks it and resolves the claim; anyone
  else waits for the claim and looks again.  Claiming happens with no await
  between the look and the claim, so two callers never fill one block:
  concurrent reads fetch it once, and a fetch cannot land on top of a
  client's write.  A failed or cancelled fill releases its claim unmarked,
  and whoever looks next tries again.
- `fill` is the background copy's unit: it asks the source which ranges
  are zero (those are zeroed, not read), and waits on the rate limiter
  before claiming, so a client read never waits behind the fill's pacing.
- Source use is counted so that a switch can wait for the last user before
  closing the source; after `retire_source()` any use is an error.
- The source may be replaced (`replace_source`, xnbd-bgctl --reconnect): a
  fetch that fails on a source replaced while it ran is tried again on the
  new one, so requests caught by the reconnect do not fail.  The last
  source failure is kept in `source_error` until a fetch succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from ovis.block._device import BlockDevice, BlockError, Extent
from ovis.nbd._constants import Errno

from ._bitmap import Bitmap
from ._copy import Copied, classify, copy_range
from ._rate import RateLimiter

Runs = list[tuple[int, int]]  # (first block, count)


class CacheMap:
    """The cached-block state of `cache`, filled from `source` in `block_size` blocks."""

    def __init__(
        self,
        source: BlockDevice,
        cache: BlockDevice,
        bitmap: Bitmap,
        block_size: int,
        *,
        on_complete: Callable[[], None],
    ) -> None:
        self.source, self.cache, self.bitmap = source, cache, bitmap
        self.block_size = block_size
        self.size = source.size
        self.copied = Copied()  # what fills moved: data read, zeros written
        self._on_complete = on_complete
        self._claims: dict[int, asyncio.Future[None]] = {}
        self.generation = 0  # bumped by replace_source
        self.source_error: str | None = None
        self._source_users = 0
        self._source_retired = False
        self.source_idle = asyncio.Event()
        self.source_idle.set()

    def blocks(self, offset: int, length: int) -> tuple[int, int]:
        """[first, end) of the blocks that bytes [offset, offset+length) touch."""
        return offset // self.block_size, -(-(offset + length) // self.block_size)

    def all_cached(self, first: int, end: int) -> bool:
        return self.bitmap.find(False, first, end) >= end

    @contextlib.asynccontextmanager
    async def using_source(self) -> AsyncIterator[BlockDevice]:
        if self._source_retired:
            raise BlockError(Errno.EIO, "proxy switched to target mode: the source is gone")
        self._source_users += 1
        self.source_idle.clear()
        try:
            yield self.source
        finally:
            self._source_users -= 1
            if not self._source_users:
                self.source_idle.set()

    def replace_source(self, source: BlockDevice) -> BlockDevice:
        """Use `source` from now on; returns the old one (the caller closes it)."""
        old, self.source = self.source, source
        self.generation += 1
        self.source_error = None
        return old

    @contextlib.asynccontextmanager
    async def source_call(self) -> AsyncIterator[BlockDevice]:
        """`using_source`, recording a failure in `source_error`."""
        try:
            async with self.using_source() as source:
                yield source
        except BlockError as exc:
            self.source_error = str(exc)
            raise

    def retire_source(self) -> None:
        """No new source use from now on; `source_idle` tells when the last one ends."""
        self._source_retired = True

    def _mark(self, first: int, count: int) -> None:
        self.bitmap.set(first, count)
        if self.bitmap.all_set():
            self._on_complete()

    def _claim(self, first: int, end: int) -> tuple[Runs, list[asyncio.Future[None]]]:
        """Claim each block in [first, end) neither cached nor claimed; never awaits.

        Returns (claimed runs, others' claims to wait for); the caller must
        `_release` the runs.
        """
        runs: Runs = []
        waits: list[asyncio.Future[None]] = []
        if not self._claims:
            runs = list(self.bitmap.runs(False, first, end))
        else:
            for run_first, count in self.bitmap.runs(False, first, end):
                for block in range(run_first, run_first + count):
                    claim = self._claims.get(block)
                    if claim is not None:
                        if claim not in waits:
                            waits.append(claim)
                    elif runs and sum(runs[-1]) == block:
                        runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                    else:
                        runs.append((block, 1))
        if runs:
            mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for run_first, count in runs:
                for block in range(run_first, run_first + count):
                    self._claims[block] = mine
        return runs, waits

    def _release(self, runs: Runs) -> None:
        if not runs:
            return
        mine = self._claims[runs[0][0]]
        for run_first, count in runs:
            for block in range(run_first, run_first + count):
                del self._claims[block]
        mine.set_result(None)

    async def ensure(self, first: int, end: int, *, known_zero: bool = False) -> None:
        """Return once blocks [first, end) are all cached, fetching what nobody else is.

        With `known_zero` (the caller asked the source) the blocks are zeroed
        in the cache instead of read.  Raises the fetch's error if a block
        this call claimed could not be filled; blocks others were filling
        are retried here if theirs failed.
        """
        while not self.all_cached(first, end):
            runs, waits = self._claim(first, end)
            if runs:
                try:
                    results = await asyncio.gather(
                        *(self._fetch(f, n, known_zero) for f, n in runs),
                        return_exceptions=True,
                    )
                finally:
                    self._release(runs)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            if waits:
                await asyncio.wait(waits)

    async def _fetch(self, first: int, count: int, known_zero: bool) -> None:
        offset = first * self.block_size
        length = min(count * self.block_size, self.size - offset)
        if known_zero:
            await self.cache.zero(offset, length, may_trim=True)
            self.copied.zero_bytes += length
        else:
            while True:
                generation = self.generation
                try:
                    async with self.source_call() as source:
                        copied = await copy_range(
                            source, self.cache, offset, length, use_extents=False
                        )
                    break
                except BlockError:
                    if self.generation == generation:
                        raise
                    # The source was replaced while this fetch ran: try the new one.
            self.copied.add(copied)
            self.source_error = None
        self._mark(first, count)

    @contextlib.asynccontextmanager
    async def overwriting(
        self, offset: int, length: int, *, whole_only: bool = False
    ) -> AsyncIterator[None]:
        """Make [offset, offset+length) safe to change in the cache; mark it after.

        Blocks the range covers only partly are fetched first (with
        `whole_only`, the caller promises not to touch them); blocks it
        covers whole are claimed, so no fetch lands on top of the change.
        They are marked only if the body succeeds.
        """
        first, end = self.blocks(offset, length)
        head = offset % self.block_size != 0
        tail = (offset + length) % self.block_size != 0 and offset + length != self.size
        if not whole_only:
            partial = ({first} if head else set()) | ({end - 1} if tail else set())
            for block in sorted(partial):
                await self.ensure(block, block + 1)
        first, end = first + head, end - tail
        runs: Runs = []
        while first < end:
            runs, waits = self._claim(first, end)
            if not waits:
                break
            self._release(runs)
            runs = []
            await asyncio.wait(waits)
        try:
            yield
            for run_first, count in runs:
                self._mark(run_first, count)
        finally:
            self._release(runs)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        """Cached blocks as the cache describes them, uncached ones as the source does.

        If the source cannot answer, its ranges are reported as data, which
        is always true.  Describes at most 64 runs per call (the caller asks again).
        """
        out: list[Extent] = []
        pos, end = offset, offset + length
        for _ in range(64):
            block = pos // self.block_size
            cached = self.bitmap[block]
            stop = min(self.bitmap.find(not cached, block) * self.block_size, end)
            if cached:
                extents = await extents_of(self.cache, pos, stop - pos)
            else:
                try:
                    async with self.source_call() as source:
                        extents = await extents_of(source, pos, stop - pos)
                except BlockError:
                    extents = [Extent(stop - pos)]
            for extent in extents:
                n = min(extent.length, stop - pos)
                out.append(Extent(n, extent.flags))
                pos += n
                if pos >= stop:
                    break
            if pos >= end:
                break
        return out

    async def fill(self, first: int, end: int, limiter: RateLimiter) -> None:
        """Fill blocks [first, end): zero runs the source calls zero, fetch the rest.

        The rate limiter is waited on before the blocks are claimed, so a
        client read of a block never waits behind the fill's pacing.
        """
        bs = self.block_size
        align = max(self.source.capabilities.min_block, self.cache.capabilities.min_block)
        offset, stop = first * bs, min(end * bs, self.size)
        pieces = [(offset, stop, False)]
        if self.source.capabilities.can_extents:
            async with self.source_call() as source:
                pieces = await classify(source, offset, stop, align)
        for run_first, run_end, zero in _block_runs(pieces, bs, self.size):
            if not zero:
                missing = sum(n for _, n in self.bitmap.runs(False, run_first, run_end))
                await limiter.acquire(missing * bs)
            await self.ensure(run_first, run_end, known_zero=zero)


def _block_runs(
    pieces: list[tuple[int, int, bool]], block_size: int, size: int
) -> list[tuple[int, int, bool]]:
    """(first block, end block, is_zero) runs: a block is zero if a zero piece covers it all."""
    first = pieces[0][0] // block_size
    end = -(-pieces[-1][1] // block_size)
    runs: list[tuple[int, int, bool]] = []
    pos = first
    for start, stop, zero in pieces:
        if not zero:
            continue
        z_first = -(-start // block_size)
        z_end = -(-stop // block_size) if stop == size else stop // block_size
        if z_first >= z_end:
            continue
        if pos < z_first:
            runs.append((pos, z_first, False))
        runs.append((z_first, z_end, True))
        pos = z_end
    if pos < end:
        runs.append((pos, end, False))
    return runs


async def extents_of(device: BlockDevice, offset: int, length: int) -> list[Extent]:
    if not device.capabilities.can_extents:
        return [Extent(length)]
    return await device.extents(offset, length)
